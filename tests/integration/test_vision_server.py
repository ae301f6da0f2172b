"""A vision-language model behind the real server: /v1 chat completions with an image_url data: URL
part, through the official `openai` client, and app-API turns with an uploaded image are answered
from the pixels (tiny random SmolVLM)."""

import base64

import openai
import pytest
from server_util import Server, signup, sse_events
from vlm_util import Picture, make_tiny_vlm, png

from chatloop.models.vision import render_vision_prompt


@pytest.fixture(scope="module")
def vera(tmp_path_factory, tokenizer):
    tmp = tmp_path_factory.mktemp("vlm-server")
    model = make_tiny_vlm(tmp / "tiny-smolvlm", tokenizer)
    srv = Server(str(model), f"sqlite:///{tmp / 'chatloop.db'}", log=tmp / "server.log").start()
    client = signup(srv.url, "vera@example.com")
    client.model_dir = model
    yield client
    srv.stop()


@pytest.fixture(scope="module")
def oai(vera):
    key = vera.post("/api/keys", json={"name": "tests"}).json()["key"]
    return openai.OpenAI(base_url=str(vera.base_url) + "/v1", api_key=key, timeout=60, max_retries=0)


def ask(oai, seed: int | None, **kw):
    parts = [{"type": "text", "text": "What is in this picture?"}]
    if seed is not None:
        url = "data:image/png;base64," + base64.b64encode(png(seed)).decode()
        parts.insert(0, {"type": "image_url", "image_url": {"url": url}})
    return oai.chat.completions.create(model="default", messages=[{"role": "user", "content": parts}],
                                       max_tokens=8, temperature=0, **kw)


def test_an_image_url_part_is_answered_from_its_pixels(oai):
    text_only, a, again, b = ask(oai, None), ask(oai, 1), ask(oai, 1), ask(oai, 2)
    assert a.model == "tiny-smolvlm:test" and a.choices[0].finish_reason in ("stop", "length")
    assert isinstance(a.choices[0].message.content, str) and a.usage.completion_tokens > 0
    # the image's tokens count in the prompt: <fake_token_around_image><global-img>, 4 image tokens, <fake...>
    assert a.usage.prompt_tokens >= text_only.usage.prompt_tokens + 6
    assert a.choices[0].message.content == again.choices[0].message.content
    assert a.choices[0].message.content != b.choices[0].message.content  # another picture, another answer


def test_a_streamed_image_answer_equals_the_whole_one(oai):
    whole = ask(oai, 3).choices[0].message.content
    chunks = list(ask(oai, 3, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole



def turn(client, conv_id: str, content: str, attachments: list[str]) -> dict:
    with client.stream("POST", f"/api/conversations/{conv_id}/messages",
                       json={"content": content, "attachments": attachments, "max_tokens": 4}) as r:
        assert r.status_code == 200, r.read()
        return sse_events(r)[-2]["message"]


def test_an_uploaded_image_is_seen_by_the_model_in_every_later_turn(vera):
    up = vera.post("/api/uploads", content=png(4), headers={"Content-Type": "image/png"})
    assert up.status_code == 201, up.text
    conv = vera.post("/api/conversations", json={}).json()
    first = turn(vera, conv["id"], "What is in this picture?", [up.json()["id"]])
    assert first["status"] == "complete" and first["model"] == "tiny-smolvlm:test"
    text_only = vera.post("/api/conversations", json={}).json()
    plain = turn(vera, text_only["id"], "What is in this picture?", [])
    assert first["prompt_tokens"] >= plain["prompt_tokens"] + 6  # the image's tokens
    second = turn(vera, conv["id"], "And the colours?", [])
    # the second prompt is the whole conversation, the first turn's image included
    from transformers import AutoProcessor

    history = [{"role": "user", "content": [{"type": "image", "image": Picture(4)},
                                            {"type": "text", "text": "What is in this picture?"}]},
               {"role": "assistant", "content": first["content"]},
               {"role": "user", "content": "And the colours?"}]
    expected = render_vision_prompt(AutoProcessor.from_pretrained(vera.model_dir), history)
    assert second["status"] == "complete" and second["prompt_tokens"] == len(expected.ids)
