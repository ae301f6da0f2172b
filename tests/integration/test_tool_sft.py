"""SFT on tool-use rows: each model sees its own tool format, the loss covers the assistant's calls and
final answers and never the tool results, and LoRA limited to the top layers trains only those."""

import json
import subprocess

import pytest
import yaml
from killer import cli, env
from safetensors.torch import load_file

from chatloop.data import tool_synthetic as T
from chatloop.data.schemas import read_dataset
from chatloop.train.sft import tokenize_chats


def _split(tok, chat: dict) -> tuple[str, str]:
    """(the trained text, the text that is not trained on)."""
    trained = tok.decode([t for t in chat["labels"] if t != -100])
    other = tok.decode([t for t, label in zip(chat["input_ids"], chat["labels"]) if label == -100])
    return trained, other


def test_labels_cover_calls_and_answers_but_not_tool_results(tmp_path, tokenizer, family_tokenizer):
    rows = read_dataset(T.materialize("synthetic:tools:60:mix:3", tmp_path), "sft")
    # a row whose exchanges include a search: (user, call, tool result, answer), wherever it sits in the row
    search, at = next((r, i) for r in rows for i, m in enumerate(r["messages"])
                      if any(c["function"]["name"] == "search_documents" for c in m.get("tool_calls", [])))
    user, call, result, answer = search["messages"][at - 1:at + 3]
    assert (user["role"], result["role"], answer["role"]) == ("user", "tool", "assistant")
    query = call["tool_calls"][0]["function"]["arguments"]["query"]
    for tok, opener in ((tokenizer, "<tool_call>{"), (family_tokenizer("qwen2.5"), "<tool_call>\n{")):
        [chat] = tokenize_chats(tok, [search], 1024)
        trained, other = _split(tok, chat)
        assert opener + '"name": "search_documents"' in trained
        assert json.dumps(query, ensure_ascii=False) in trained and answer["content"] in trained
        assert result["content"] not in trained and result["content"] in other
        assert user["content"] in other and T.TOOLS["search_documents"]["function"]["description"][:60] in other
    # the native template renders the tool result itself, as Qwen's does
    assert "<tool_response>" in _split(family_tokenizer("qwen2.5"), tokenize_chats(
        family_tokenizer("qwen2.5"), [search], 1024)[0])[1]
    plain = next(r for r in rows if not any(m.get("tool_calls") for m in r["messages"]))
    [chat] = tokenize_chats(tokenizer, [plain], 1024)
    trained, other = _split(tokenizer, chat)
    assert trained.startswith(plain["messages"][-1]["content"]) and "<tool_call>" not in trained
    assert '"name": "calculator"' in other or '"name": "current_time"' in other \
        or '"name": "search_documents"' in other  # the tools are offered all the same


@pytest.mark.slow
def test_lora_on_the_top_layer_trains_on_tool_rows_and_leaves_lower_layers(tmp_path, tiny_dir):
    data = T.write_jsonl(T.generate(48, seed=5), tmp_path / "tools.jsonl")
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "tool-sft", "seed": 1, "model": str(tiny_dir), "data": [str(data)], "max_steps": 3,
        "batch_size": 4, "lr": 5e-3, "warmup_steps": 0, "max_length": 1024, "logging_steps": 1,
        "eval_fraction": 0.0, "threads": 2,
        "lora": {"enabled": True, "r": 4, "alpha": 8, "layers_to_transform": [1]},
    }))
    done = subprocess.run(cli("sft", config, tmp_path / "run", "--json"), check=False, env=env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["step"] == 3
    before = load_file(tiny_dir / "model.safetensors")
    after = load_file(tmp_path / "run" / "final" / "model.safetensors")
    changed = {k for k in before if not before[k].equal(after[k])}
    assert changed and all(".layers.1." in k for k in changed)
    assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)
