"""The app API under /api (docs/api.md): accounts, conversations, feedback, admin."""
