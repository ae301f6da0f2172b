"""Datasets: JSONL schemas with validation (`schemas.py`), corpora for pretraining (`corpus.py`) and
synthetic generators written by this project (`synthetic.py`)."""
