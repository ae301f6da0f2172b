"""The chat server: FastAPI app with the OpenAI-compatible /v1 API, the app /api and the web UI."""
