"""chatloop: an open, self-hostable, full-stack ChatGPT (model, alignment, product, flywheel)."""

import os

__version__ = "0.1.0"

# The one place chatloop sets the Hugging Face environment. Their libraries read it at import, so
# it is set before any of them loads: no telemetry, no network unless asked (HF_HUB_OFFLINE=0 lets
# `hf:` references download), and only their errors on the console. A value already set wins.
for _name, _value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("TRANSFORMERS_VERBOSITY", "error")):
    os.environ.setdefault(_name, _value)

# oneDNN (and ideep, torch's wrapper of it) keep every matmul primitive they build, keyed by its
# shapes, up to 1024 of each: a server that prefills prompts of ever new lengths grows by about
# 0.3 MB per new length until then (hundreds of MB; found by `chatloop bench load`). 128 keeps the
# decode shapes of every batch size hot (about 5 per batch size) and bounds the rest; rebuilding a
# prefill's primitives costs far less than the prefill. Read when the first primitive is built.
for _name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    os.environ.setdefault(_name, "128")
