"""The tiny pipeline end to end, in process: tokenizer -> pretrain -> sft (full and LoRA), chained
through `runs:NAME` references. Each stage must lower its loss, move the weights it trains (every
tensor under full fine-tuning, exactly the adapted projections under LoRA, the whole backbone of a
reward model) and publish a `final/` that the serving stack loads; SFT must train on exactly the
assistant tokens that `render_conversation` marks."""

import json

import pytest
import torch
from safetensors.torch import load_file

from chatloop.models.chat_format import render_conversation
from chatloop.models.loading import load_model
from chatloop.models.manifest import verify_manifest

TINY_MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """CHATLOOP_HOME with tiny-tokenizer and tiny-pretrain runs; yields the home directory."""
    from chatloop.train import pretrain, tokenizer

    home = tmp_path_factory.mktemp("train-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("CHATLOOP_HOME", str(home))
    tokenizer.run(tokenizer.TokenizerConfig(run_name="tiny-tokenizer", vocab_size=600,
                                            data=["synthetic:corpus:800:mix", "synthetic:sft:400:mix"]),
                  home / "runs" / "tiny-tokenizer", resume=False)
    cfg = pretrain.PretrainConfig(
        run_name="tiny-pretrain", tokenizer="runs:tiny-tokenizer", model=TINY_MODEL,
        data=["synthetic:corpus:800:mix", "synthetic:sft:800:mix"], seq_len=64, batch_size=8, max_steps=40,
        eval_every=20, save_every=20, measure_peak=False, optim={"lr": 0.005, "warmup_steps": 5},
    )
    pretrain.run(cfg, home / "runs" / "tiny-pretrain", resume=False)
    yield home
    mp.undo()


def _losses(run_dir, key="loss"):
    return [r[key] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if key in r]


def _weights(final) -> dict:
    return load_file(final / "model.safetensors")


def _untouched(new: dict, old: dict, names) -> list[str]:
    """The tensors among `names` that are bit for bit the same in both weight maps."""
    return sorted(k for k in names if torch.equal(new[k], old[k]))


def _assert_every_tensor_moved(child, parent) -> None:
    """Full fine-tuning: same tensors as the parent, and every one changed. The tiny model ties its
    embeddings, so embed_tokens is also the lm_head: every row gets a gradient through the softmax
    (and norms get gradients too), so no tensor may legitimately stay as it was."""
    new, old = _weights(child), _weights(parent)
    assert new.keys() == old.keys()
    untouched = _untouched(new, old, old)
    assert not untouched, f"training left these tensors unchanged: {untouched}"


def sft_config(**over):
    from chatloop.train.sft import SFTStageConfig

    fields = dict(run_name="tiny-sft", model="runs:tiny-pretrain", data=["synthetic:sft:300:mix:1"], max_steps=16,
                  batch_size=8, lr=3e-3, warmup_steps=2, max_length=128, save_every=8, logging_steps=2)
    fields.update(over)
    return SFTStageConfig(**fields)


def test_pretrain_stage_in_chain_lowered_loss(chain):
    losses = _losses(chain / "runs" / "tiny-pretrain")
    assert losses[-1] < losses[0] - 1.0
    verify_manifest(chain / "runs" / "tiny-pretrain" / "final")


def test_sft_labels_are_exactly_the_render_conversation_mask(chain):
    from transformers import AutoTokenizer

    from chatloop.train.sft import tokenize_chats

    tok = AutoTokenizer.from_pretrained(chain / "runs" / "tiny-pretrain" / "final")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4."}, {"role": "user", "content": "三加三？"},
                {"role": "assistant", "content": "六。"}]
    [row] = tokenize_chats(tok, [{"messages": messages}], max_length=256)
    rendered = render_conversation(tok, messages)
    assert row["input_ids"] == rendered.ids
    assert [label != -100 for label in row["labels"]] == [bool(m) for m in rendered.mask]
    trained = tok.decode([t for t in row["labels"] if t != -100])
    assert trained == "4.<|im_end|>\n六。<|im_end|>\n"


def test_tokenizer_pretrain_sft_end_to_end(chain):
    from chatloop.train import sft

    run_dir = chain / "runs" / "tiny-sft"
    summary = sft.run(sft_config(), run_dir, resume=False)
    losses = _losses(run_dir)
    assert losses[-1] < losses[0]
    final = run_dir / "final"
    manifest = verify_manifest(final)
    assert manifest["parent"] == "tiny-pretrain:pretrain-step40" and manifest["stage"] == "sft"
    assert summary["eval_loss"] > 0
    _assert_every_tensor_moved(final, chain / "runs" / "tiny-pretrain" / "final")
    loaded = load_model(str(final), "float32")
    ids = render_conversation(loaded.tokenizer, [{"role": "user", "content": "What is 2 + 3?"}],
                              add_generation_prompt=True).ids
    out = loaded.model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    assert out.shape[1] > len(ids)


def test_sft_with_lora_merges_adapters_into_final(chain):
    from transformers import AutoModelForCausalLM

    from chatloop.train import sft

    run_dir = chain / "runs" / "tiny-sft-lora"
    cfg = sft_config(run_name="tiny-sft-lora", lora={"enabled": True, "r": 4, "alpha": 8}, lr=1e-2,
                     max_steps=8)
    sft.run(cfg, run_dir, resume=False)
    final = run_dir / "final"
    assert not (final / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(final)
    assert not any("lora" in name for name, _ in model.named_parameters())
    new, old = _weights(final), _weights(chain / "runs" / "tiny-pretrain" / "final")
    assert new.keys() == old.keys()
    # model.layers.N.self_attn.q_proj.weight -> q_proj
    adapted = {k for k in old if k.split(".")[-2] in cfg.lora.target_modules}
    assert len(adapted) == TINY_MODEL["num_layers"] * len(cfg.lora.target_modules)
    assert not _untouched(new, old, adapted), "a merged adapter left its projection unchanged"
    frozen = old.keys() - adapted  # embed_tokens (also the tied lm_head) and the norms
    assert "model.embed_tokens.weight" in frozen and any("norm" in k for k in frozen)
    assert _untouched(new, old, frozen) == sorted(frozen), "LoRA changed weights it does not adapt"
    assert any(path.name.startswith("step-") for path in (run_dir / "checkpoints").iterdir())


# --- preference stages on the tiny SFT model ------------------------------------------------------

@pytest.fixture(scope="module")
def sft_home(chain):
    from chatloop.train import sft

    run_dir = chain / "runs" / "tiny-sft"
    if not (run_dir / "final").is_dir():
        sft.run(sft_config(), run_dir, resume=False)
    return chain


def _pref_fields(**over):
    fields = dict(model="runs:tiny-sft", max_steps=8, batch_size=8, lr=1e-3, warmup_steps=1, max_length=128,
                  save_every=4, logging_steps=1)
    fields.update(over)
    return fields


def test_trl_tokenization_matches_render_conversation(sft_home):
    """TRL splits prompt/completion where the chat template's generation prompt ends: the same tokens
    render_conversation masks, so preference stages use our one chat format."""
    from transformers import AutoTokenizer
    from trl.trainer.dpo_trainer import _tokenize

    tok = AutoTokenizer.from_pretrained(sft_home / "runs" / "tiny-sft" / "final")
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "十乘以三？"}]
    reply = {"role": "assistant", "content": "三十。"}
    prompt_ids = _tokenize(tok, prompt, add_generation_prompt=True)["input_ids"]
    full_ids = _tokenize(tok, prompt + [reply])["input_ids"]
    rendered = render_conversation(tok, prompt + [reply])
    assert full_ids == rendered.ids
    assert rendered.mask == [0] * len(prompt_ids) + [1] * (len(full_ids) - len(prompt_ids))


def test_dpo_changes_weights_and_lowers_loss(sft_home):
    from chatloop.train import dpo

    run_dir = sft_home / "runs" / "tiny-dpo"
    summary = dpo.run(dpo.DPOStageConfig(run_name="tiny-dpo", data=["synthetic:pairs:300:en"], **_pref_fields()),
                      run_dir, resume=False)
    assert summary["last_loss"] < summary["first_loss"]
    _assert_every_tensor_moved(run_dir / "final", sft_home / "runs" / "tiny-sft" / "final")
    assert verify_manifest(run_dir / "final")["parent"].startswith("tiny-sft:")
    load_model(str(run_dir / "final"), "float32")


def test_kto_changes_weights_and_lowers_loss(sft_home):
    from chatloop.train import kto

    run_dir = sft_home / "runs" / "tiny-kto"
    summary = kto.run(kto.KTOStageConfig(run_name="tiny-kto", data=["synthetic:kto:300:en"], **_pref_fields()),
                      run_dir, resume=False)
    assert summary["last_loss"] < summary["first_loss"]
    _assert_every_tensor_moved(run_dir / "final", sft_home / "runs" / "tiny-sft" / "final")
    load_model(str(run_dir / "final"), "float32")


def test_reward_model_learns_pairs_and_reports_heldout_accuracy(sft_home):
    from chatloop.train import reward

    run_dir = sft_home / "runs" / "tiny-reward"
    summary = reward.run(reward.RewardStageConfig(
        run_name="tiny-reward", data=["synthetic:pairs:400:en:2"], eval_fraction=0.1,
        **_pref_fields(max_steps=30, lr=2e-3)), run_dir, resume=False)
    assert summary["last_loss"] < summary["first_loss"]
    assert summary["heldout_pair_accuracy"] >= 0.6
    new, old = _weights(run_dir / "final"), _weights(sft_home / "runs" / "tiny-sft" / "final")
    backbone = {k for k in old if k.startswith("model.")}  # all of it: the tied lm_head is not saved
    assert new.keys() == backbone | {"score.weight"}  # the LM head became a one-output score head
    untouched = _untouched(new, old, backbone)
    assert not untouched, f"the reward model's backbone did not move: {untouched}"
    model, _tok, _parent = reward.load_reward_model(str(run_dir / "final"))
    assert model.config.num_labels == 1
    assert verify_manifest(run_dir / "final")["metrics"]["heldout_pair_accuracy"] == summary["heldout_pair_accuracy"]


def test_grpo_with_exact_answer_and_reward_model_changes_weights(sft_home):
    from chatloop.train import grpo

    assert grpo.exact_answer([[{"role": "assistant", "content": "7 + 5 = 12."}], "It is 13"], ["12", "12"]) == [1.0, 0.0]
    if not (sft_home / "runs" / "tiny-reward" / "final").is_dir():
        pytest.skip("needs the reward run of test_reward_model_learns_pairs_and_reports_heldout_accuracy")
    run_dir = sft_home / "runs" / "tiny-grpo"
    summary = grpo.run(grpo.GRPOStageConfig(
        run_name="tiny-grpo", data=["synthetic:prompts:64:en"], reward_model="runs:tiny-reward",
        num_generations=4, max_completion_length=12, **_pref_fields(max_steps=4, save_every=2)), run_dir, resume=False)
    assert summary["step"] == 4 and "last_kl" in summary and "last_reward" in summary
    _assert_every_tensor_moved(run_dir / "final", sft_home / "runs" / "tiny-sft" / "final")
    load_model(str(run_dir / "final"), "float32")
