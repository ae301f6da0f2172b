"""The chat service (docs/architecture.md): request plans, the engine pool keyed by exact model
version, and the one streaming loop that /v1, /api and the web UI share."""
