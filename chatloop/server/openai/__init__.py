"""The OpenAI-compatible API: protocol models (protocol.py) and thin routes (routes.py)."""
