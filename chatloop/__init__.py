"""chatloop: an open, self-hostable, full-stack ChatGPT (model, alignment, product, flywheel)."""

__version__ = "0.1.0"
