"""Model references, loading (HF dirs, GGUF files, the bundled default) and the chat format."""
