"""Image input through the real server (SQLite and PostgreSQL): an image part sent with the official
`openai` client reaches a text-only model as its OCR text, marked as data; bad and oversized images
get OpenAI-shaped 4xx; the app API stores uploads per owner and sends them with a message."""

import io
import random

import httpx
import openai
import pytest
from image_util import INVOICE, rendered
from image_util import data_url as url_of
from PIL import Image as PILImage
from server_util import Server, database_url, signup, sse_events

from chatloop.models.chat_format import render_prompt
from chatloop.serving.images import marked

QUESTION = "What is the total on this invoice?"
MAX_IMAGE_BYTES = 300_000


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp(f"images-{request.param}")
    url, drop = database_url(request.param, tmp)
    srv = Server(str(tiny_dir), url, log=tmp / "server.log",
                 env={"CHATLOOP_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES), "CHATLOOP_MAX_IMAGES": "2"}).start()
    yield srv
    srv.stop()
    if drop:
        drop()


@pytest.fixture(scope="module")
def alice(server):
    client = signup(server.url, "alice@example.com")
    return client, client.post("/api/keys", json={"name": "tests"}).json()["key"]


@pytest.fixture(scope="module")
def oai(server, alice):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=alice[1], max_retries=0, timeout=300)


def with_image(url: str, text: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}]}]


def noise_png(side: int) -> bytes:
    """An incompressible PNG (random pixels), so its size is about 3 bytes a pixel."""
    rng = random.Random(0)
    out = io.BytesIO()
    pixels = bytes(rng.getrandbits(8) for _ in range(side * side * 3))
    PILImage.frombytes("RGB", (side, side), pixels).save(out, "PNG")
    return out.getvalue()


def tokens(tokenizer, content: str) -> int:
    return len(render_prompt(tokenizer, [{"role": "user", "content": content}]).ids)


def test_an_image_part_reaches_a_text_only_model_as_marked_ocr_text(oai, tokenizer):
    r = oai.chat.completions.create(model="default", messages=with_image(url_of(rendered(INVOICE))),
                                    max_tokens=1, temperature=0)
    # The prompt the model saw is exactly the question then the image's text in its data marking:
    # the count matches only if OCR read the line exactly and the marking is as documented.
    expected = tokens(tokenizer, QUESTION + "\n\n" + marked(1, INVOICE))
    assert r.usage.prompt_tokens == expected
    assert expected > tokens(tokenizer, QUESTION) + 20


def test_http_urls_non_images_and_oversized_images_get_openai_shaped_4xx(oai, server, alice):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="default", messages=with_image("https://example.com/invoice.png"))
    err = e.value.body
    assert "only data: URLs" in err["message"] and err["param"] == "messages[0].content[1]"
    assert err["code"] == "invalid_image_url" and err["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="default", messages=with_image(url_of(b"%PDF-1.4 not an image")))
    assert e.value.body["param"] == "messages[0].content[1]" and e.value.body["code"] == "invalid_image"
    bomb = io.BytesIO()
    PILImage.new("L", (6000, 6000), 255).save(bomb, "PNG")  # 36 M pixels in a few kB
    for data in (noise_png(400), bomb.getvalue()):
        r = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                       headers={"Authorization": f"Bearer {alice[1]}"},
                       json={"model": "default", "messages": with_image(url_of(data))})
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == "image_too_large" and err["type"] == "request_too_large"
    part = {"type": "image_url", "image_url": {"url": url_of(rendered("x"))}}
    three = [{"role": "user", "content": [part] * 3}]
    with pytest.raises(openai.BadRequestError, match="at most 2 per request"):
        oai.chat.completions.create(model="default", messages=three)


def upload(client: httpx.Client, data: bytes, mime: str = "image/png") -> httpx.Response:
    return client.post("/api/uploads", content=data, headers={"Content-Type": mime})


def test_uploads_are_validated_and_private_to_their_owner(server, alice):
    client = alice[0]
    png = rendered(INVOICE)
    r = upload(client, png)
    assert r.status_code == 201, r.text
    up = r.json()
    assert (up["mime"], up["bytes"], up["width"], up["height"]) == ("image/png", len(png), 640, 120)
    got = client.get(up["url"])
    assert got.status_code == 200 and got.content == png and got.headers["content-type"] == "image/png"
    assert upload(client, b"hello", "text/plain").status_code == 415
    assert upload(client, b"not really a png", "image/png").status_code == 400
    assert upload(client, noise_png(400)).status_code == 413
    bare = httpx.post(server.url + "/api/uploads", content=png, headers={"Content-Type": "image/png"},
                      cookies=client.cookies)
    assert bare.status_code == 403  # a cookie session without the CSRF header
    bob = signup(server.url, "bob-uploads@example.com")
    assert bob.get(up["url"]).status_code == 404
    conv = bob.post("/api/conversations", json={}).json()
    r = bob.post(f"/api/conversations/{conv['id']}/messages",
                 json={"content": "Hi", "attachments": [up["id"]]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "attachments"


def test_a_message_sends_an_upload_and_keeps_it_with_the_conversation(server, alice, tokenizer):
    client = alice[0]
    up = upload(client, rendered(INVOICE)).json()
    conv = client.post("/api/conversations", json={}).json()
    with client.stream("POST", f"/api/conversations/{conv['id']}/messages",
                       json={"content": QUESTION, "attachments": [up["id"]], "max_tokens": 2}) as r:
        assert r.status_code == 200
        events = sse_events(r)
    start, done = events[0], events[-2]
    assert [a["id"] for a in start["user_message"]["attachments"]] == [up["id"]]
    # the stored upload is shown before the question, and read to the model as marked OCR text
    assert done["message"]["prompt_tokens"] == tokens(tokenizer, marked(1, INVOICE) + "\n\n" + QUESTION)
    history = client.get(f"/api/conversations/{conv['id']}").json()["messages"]
    assert history[0]["attachments"][0]["url"] == up["url"] and history[1]["attachments"] == []
    again = client.post(f"/api/conversations/{conv['id']}/messages",
                        json={"content": "x", "attachments": [up["id"]]})
    assert again.status_code == 400 and "already sent" in again.json()["error"]["message"]
    assert client.delete(f"/api/conversations/{conv['id']}").status_code == 204
    assert client.get(up["url"]).status_code == 404  # the conversation's images went with it


def test_deleting_all_my_data_deletes_my_uploads_and_other_routes_keep_the_small_body_cap(server):
    carol = signup(server.url, "carol-uploads@example.com")
    up = upload(carol, rendered("carol")).json()
    assert carol.get(up["url"]).status_code == 200
    assert carol.delete("/api/me/data").status_code == 204
    assert carol.get(up["url"]).status_code == 404
    big = carol.post("/api/conversations", content=b'{"title": "' + b"x" * 2_000_000 + b'"}',
                     headers={"Content-Type": "application/json"})
    assert big.status_code == 413  # only the image-carrying routes take the larger bodies
