"""chatloop: an open, self-hostable, full-stack ChatGPT (model, alignment, product, flywheel)."""

import os

__version__ = "0.1.0"

# The one place chatloop sets the Hugging Face environment. Their libraries read it at import, so
# it is set before any of them loads: no telemetry, no network unless asked (HF_HUB_OFFLINE=0 lets
# `hf:` references download), and only their errors on the console. A value already set wins.
for _name, _value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("TRANSFORMERS_VERBOSITY", "error")):
    os.environ.setdefault(_name, _value)
