"""The tokenizer stage: byte-level BPE round-trips mixed English/中文/emoji text exactly, carries the
chat special tokens and a template that the one chat-format function can render and mask."""

import json

from transformers import AutoTokenizer

from chatloop.models.chat_format import render_conversation
from chatloop.models.manifest import verify_manifest
from chatloop.train.tokenizer import ROUND_TRIP_SAMPLE, TokenizerConfig, run


def test_tokenizer_stage_round_trips_and_renders_chats(tmp_path):
    cfg = TokenizerConfig(run_name="t", data=["synthetic:corpus:600:mix", "synthetic:sft:300:mix"], vocab_size=800)
    summary = run(cfg, tmp_path / "run", resume=False)
    assert summary["round_trip"] and summary["bytes_per_token"] > 1.5
    final = tmp_path / "run" / "final"
    verify_manifest(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert len(tok) == 800
    for text in (ROUND_TRIP_SAMPLE, "未见过的字：龘靐 and 👩‍👩‍👧 family"):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.eos_token == "<|im_end|>"
    rendered = render_conversation(tok, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
    masked = tok.decode([i for i, m in zip(rendered.ids, rendered.mask) if m])
    assert masked.startswith("4<|im_end|>")
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["bytes_per_token"] == summary["bytes_per_token"]
