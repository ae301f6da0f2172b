"""what the model saw: each answer records the system prompt, custom instructions and dropped turns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('system_prompt', sa.Text(), nullable=True))
        batch.add_column(sa.Column('custom_instructions', sa.Text(), nullable=True))
        batch.add_column(sa.Column('context_dropped', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.drop_column('context_dropped')
        batch.drop_column('custom_instructions')
        batch.drop_column('system_prompt')
