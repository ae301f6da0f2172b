"""Vision-language models get the pixels: a tiny random SmolVLM (Idefics3) through our engine
equals transformers' own generate, alone and packed beside a text prompt; the image matters; the
prompt rendering keeps images with their turns; unsupported architectures say why."""

import json
import threading

import pytest
import torch
from vlm_util import Picture, make_tiny_vlm

from chatloop.engine.sampling import SamplingParams
from chatloop.engine.scheduler import Engine
from chatloop.errors import ModelRefError, UsageError
from chatloop.models.chat_format import render_prompt
from chatloop.models.loading import load_model
from chatloop.models.vision import render_vision_prompt

TOKENS = 12


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory, tokenizer):
    return make_tiny_vlm(tmp_path_factory.mktemp("tiny-smolvlm"), tokenizer)


@pytest.fixture(scope="module")
def vlm_engine(vlm_dir):
    engine = Engine(lambda: load_model(str(vlm_dir), "float32"), max_batch=4)
    yield engine
    engine.shutdown()


def image(seed: int) -> Picture:
    return Picture(seed)


def asking(*images, text="What is in this picture?"):
    return [{"role": "user", "content": [*({"type": "image", "image": im} for im in images),
                                         {"type": "text", "text": text}]}]


def greedy() -> SamplingParams:
    return SamplingParams(max_tokens=TOKENS, temperature=0, ignore_eos=True)


def transformers_greedy(engine, ids, pixels) -> list[int]:
    """transformers' own generate(do_sample=False) on the same ids and pixels (on the engine thread)."""
    def run():
        with torch.inference_mode():
            inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
            out = engine.loaded.model.generate(**inputs, **(pixels.tensors if pixels else {}),
                                               max_new_tokens=TOKENS, do_sample=False)
        return out[0, len(ids):].tolist()

    return engine.run_on_engine_thread(run)


def same_greedy(ours: list[int], theirs: list[int]) -> bool:
    # transformers stops at the end-of-utterance token; ours (ignore_eos) runs on past it
    return len(theirs) >= 3 and ours[: len(theirs)] == theirs


def admitted_together(engine, submit):
    """Run `submit()` while the engine thread is held, so that what it queues is admitted in one
    packed prefill; returns what `submit` returned."""
    entered, release = threading.Event(), threading.Event()
    blocker = threading.Thread(target=engine.run_on_engine_thread, args=(lambda: (entered.set(), release.wait()),))
    blocker.start()
    entered.wait()
    try:
        return submit()
    finally:
        release.set()
        blocker.join()


def test_vlm_greedy_equals_transformers_generate(vlm_engine):
    rendered = render_vision_prompt(vlm_engine.processor, asking(image(1)))
    assert rendered.pixels is not None and rendered.pixels.count == 1
    assert rendered.ids.count(vlm_engine.vision.image_token_id) == 4  # (64/16)² patches, pixel shuffle ×2
    ours = vlm_engine.submit(rendered.ids, greedy(), pixels=rendered.pixels).wait().token_ids
    assert same_greedy(ours, transformers_greedy(vlm_engine, rendered.ids, rendered.pixels))


def test_image_and_text_prompts_prefilled_together_each_equal_transformers(vlm_engine):
    pictured = render_vision_prompt(vlm_engine.processor, asking(image(2), image(3), text="Compare them."))
    text = render_prompt(vlm_engine.tokenizer, [{"role": "user", "content": "Tell me a story."}])
    assert "User: Tell me a story.<end_of_utterance>" in text.text  # string content read as a text part
    a, b = admitted_together(vlm_engine, lambda: (vlm_engine.submit(pictured.ids, greedy(), pixels=pictured.pixels),
                                                  vlm_engine.submit(text.ids, greedy())))
    ours_a, ours_b = a.wait().token_ids, b.wait().token_ids
    assert same_greedy(ours_a, transformers_greedy(vlm_engine, pictured.ids, pictured.pixels))
    assert same_greedy(ours_b, transformers_greedy(vlm_engine, text.ids, None))


def test_the_pixels_change_the_answer(vlm_engine):
    answers = []
    for seed in (4, 5):
        rendered = render_vision_prompt(vlm_engine.processor, asking(image(seed)))
        answers.append((rendered.ids, vlm_engine.submit(rendered.ids, greedy(), pixels=rendered.pixels).wait()))
    (ids_a, a), (ids_b, b) = answers
    assert ids_a == ids_b  # same tokens: only the image features differ
    assert a.token_ids != b.token_ids


def test_images_that_do_not_match_their_tokens_fail_only_their_request(vlm_engine):
    one = render_vision_prompt(vlm_engine.processor, asking(image(11)))
    two = render_vision_prompt(vlm_engine.processor, asking(image(11), image(12)))
    bad, good = admitted_together(vlm_engine, lambda: (vlm_engine.submit(one.ids, greedy(), pixels=two.pixels),
                                                       vlm_engine.submit(one.ids, greedy(), pixels=one.pixels)))
    failed = bad.wait()  # 4 image tokens for 8 feature vectors
    assert failed.finish_reason == "error" and failed.input_error and "image tokens" in failed.error
    assert good.wait().completion_tokens == TOKENS


def test_dropping_old_turns_drops_their_images(vlm_engine):
    messages = [*asking(image(6), text="First picture."), {"role": "assistant", "content": "A cat."},
                *asking(image(7), text="And this one?")]
    full = render_vision_prompt(vlm_engine.processor, messages)
    assert full.pixels.count == 2 and full.dropped == 0
    cut = render_vision_prompt(vlm_engine.processor, messages, max_tokens=len(full.ids) - 1)
    assert cut.dropped == 2 and cut.pixels.count == 1 and "First picture" not in cut.text
    assert cut.ids.count(vlm_engine.vision.image_token_id) == 4


def test_tools_and_past_calls_are_written_into_the_vision_prompt(vlm_engine):
    tool = {"type": "function", "function": {"name": "zoom", "parameters": {"type": "object"}}}
    call = {"id": "c1", "type": "function", "function": {"name": "zoom", "arguments": "{}"}}
    messages = [*asking(image(10)), {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "zoomed"}]
    rendered = render_vision_prompt(vlm_engine.processor, messages, tools=[tool])
    assert rendered.text.startswith("<|im_start|>System: ") and '"name": "zoom"' in rendered.text
    assert "<tool_call>" in rendered.text and rendered.pixels.count == 1


def test_a_bfloat16_engine_answers_an_image(vlm_dir):
    engine = Engine(lambda: load_model(str(vlm_dir), "auto"), max_batch=2)
    try:
        rendered = render_vision_prompt(engine.processor, asking(image(8)))
        result = engine.submit(rendered.ids, greedy(), pixels=rendered.pixels).wait()
        assert result.finish_reason == "length" and result.completion_tokens == TOKENS
    finally:
        engine.shutdown()


def test_a_text_model_refuses_pixels(tiny_engine, vlm_engine):
    assert not tiny_engine.accepts_images and vlm_engine.accepts_images
    pixels = render_vision_prompt(vlm_engine.processor, asking(image(9))).pixels
    with pytest.raises(UsageError, match="text-only model"):
        tiny_engine.submit([1, 2, 3], greedy(), pixels=pixels)


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen2_vl_is_refused_with_the_reason(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ModelRefError, match="not supported yet: its multimodal rotary positions"):
        load_model(str(tmp_path), "float32")
