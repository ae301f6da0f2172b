"""Persistence: SQLAlchemy 2 models and Alembic migrations; SQLite (WAL) by default, PostgreSQL."""
