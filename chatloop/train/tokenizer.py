"""Stage `tokenizer`: a byte-level BPE trained with `tokenizers`, with chat special tokens and a
ChatML-style chat template, saved as a Hugging Face tokenizer in RUN_DIR/final/.

    chatloop train tokenizer --config configs/tiny/tokenizer.yaml

Byte-level means every UTF-8 string (English, 中文, emoji) round-trips exactly; the stage checks
that on a mixed sample and on held-out documents, and reports bytes per token on the held-out part.
End of turn `<|im_end|>` is the EOS token, so chat models trained with it learn to stop.
"""

from pathlib import Path

from pydantic import Field

from chatloop.errors import ChatloopError
from chatloop.train.common import expand_data, setup_torch
from chatloop.train.config import StageConfig
from chatloop.train.rundir import RunDir, note

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
ROUND_TRIP_SAMPLE = "Hello, world! 你好，世界。Emoji 🤖🚀 and mixed 数字 12345 ✓ café naïve\n\ttabs  spaces"


class TokenizerConfig(StageConfig):
    data: list[str] = Field(description="Corpora to learn merges from: .txt/.jsonl (text, sft) or synthetic specs.")
    vocab_size: int = Field(default=4096, ge=300, description="Target vocabulary size incl. 256 bytes + specials.")
    min_frequency: int = Field(default=2, ge=1, description="Merges must occur at least this often.")
    holdout_fraction: float = Field(default=0.05, gt=0, lt=0.5, description="Documents kept out to measure.")


def _texts(files: list[Path]) -> list[str]:
    """Documents from text corpora, or the message contents of chat datasets."""
    from chatloop.data.schemas import read_texts

    return [t for path in files for t in read_texts(path, lambda ms: "\n".join(m["content"] for m in ms))]


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def round_trips(tok, text: str) -> bool:
    return tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def run(cfg: TokenizerConfig, run_dir: Path, resume: bool) -> dict:
    setup_torch(cfg)
    run = RunDir(run_dir, cfg, stage="tokenizer", resume=resume)
    files = expand_data(cfg.data, run_dir)
    texts = _texts(files)
    n_hold = max(1, int(len(texts) * cfg.holdout_fraction))
    train, held = texts[:-n_hold], texts[-n_hold:]
    tok = train_tokenizer(train, cfg.vocab_size, cfg.min_frequency)
    bad = [t for t in [ROUND_TRIP_SAMPLE, *held] if not round_trips(tok, t)]
    if bad:
        raise ChatloopError(f"the trained tokenizer does not round-trip {len(bad)} texts, e.g. {bad[0][:80]!r}")
    n_bytes = sum(len(t.encode("utf-8")) for t in held)
    n_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in held)
    metrics = {"vocab_size": len(tok), "train_docs": len(train), "heldout_docs": len(held),
               "bytes_per_token": round(n_bytes / n_tokens, 4), "round_trip": True}
    run.log({"step": 0, **metrics})
    final = run.publish_final(tok.save_pretrained, parent=None, data=files, metrics=metrics, step=0)
    note(f"tokenizer: {len(tok)} tokens, {metrics['bytes_per_token']} bytes/token on held-out text -> {final}")
    return {"final": str(final), **metrics}
