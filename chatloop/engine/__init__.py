"""Generation: KV-cache runner, sampling, stop strings, streaming and the batching scheduler."""
