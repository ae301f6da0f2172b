"""Training stages (tokenizer, pretrain, sft, ...), one module each, run through `chatloop train STAGE`.

Shared pieces: `config.py` (YAML -> typed configs, `--set` overrides), `checkpoints.py` (atomic save,
verified resume), `rundir.py` (run directory layout, metrics.jsonl, the published `final/` model).
"""
