"""Dataset schemas and synthetic generators: validation errors name file, line and field; every
generated row passes its own schema; generation is deterministic."""

import json

import pytest

from chatloop.data.schemas import read_dataset, validate_row
from chatloop.data.synthetic import GENERATORS, generate, materialize
from chatloop.errors import UsageError

KIND_OF = {"corpus": "text", "sft": "sft", "pairs": "pairs", "kto": "kto", "prompts": "prompts"}


@pytest.mark.parametrize("kind", list(GENERATORS))
def test_generated_rows_pass_their_schema_in_both_languages(kind):
    rows = list(generate(kind, 200, "mix", seed=1))
    for row in rows:
        validate_row(row, KIND_OF[kind])
    text = json.dumps(rows, ensure_ascii=False)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text) and any(w in text for w in ("What", "How", "The"))


def test_generation_is_deterministic(tmp_path):
    a = materialize("synthetic:sft:50:zh:3", tmp_path / "a")
    b = materialize("synthetic:sft:50:zh:3", tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    assert list(generate("sft", 5, seed=0)) != list(generate("sft", 5, seed=1))


def test_validation_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": [{"role": "user", "content": "hi"}], "chosen": {"role": "assistant", "content": "a"},
            "rejected": {"role": "assistant", "content": "b"}}
    bad = {**good, "rejected": {"role": "user", "content": "b"}}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UsageError, match=r"pairs\.jsonl:2: field 'rejected'"):
        read_dataset(path, "pairs")
    path.write_text('{"messages": [{"role": "user", "content": "only a question"}]}\n')
    with pytest.raises(UsageError, match=r":1: field 'messages': needs at least one assistant"):
        read_dataset(path, "sft")
    path.write_text('{"prompt": [{"role": "user", "content": "q"}], "completion": '
                    '{"role": "assistant", "content": "a"}, "label": "yes"}\n')
    with pytest.raises(UsageError, match=r":1: field 'label'"):
        read_dataset(path, "kto")
    path.write_text("{not json\n")
    with pytest.raises(UsageError, match=r":1: not valid JSON"):
        read_dataset(path, "text")


def test_bad_synthetic_spec_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="synthetic:KIND:N"):
        materialize("synthetic:sft", tmp_path)
    with pytest.raises(UsageError, match="unknown synthetic kind"):
        materialize("synthetic:poems:3", tmp_path)
