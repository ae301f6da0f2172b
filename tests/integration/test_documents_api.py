"""Documents through the real server (SQLite and PostgreSQL): multipart uploads with a session
cookie (CSRF checked) or an API key, listing per conversation, the size, type and content
refusals in OpenAI's error shape, another user's 404s, and deletion that the search honours."""

import httpx
import pytest
from server_util import Server, database_url, signup

from chatloop.tools.retrieval import MAX_DOCUMENT_BYTES

GARDEN = ("Tomatoes need six to eight hours of direct sun, deep watering twice a week and a stake to climb. "
          "Pinch the side shoots so the plant puts its energy into fruit.")
SAILING = "<html><body><h1>Knots</h1><p>A bowline makes a fixed loop at the end of a line.</p></body></html>"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp(f"documents-{request.param}")
    url, drop = database_url(request.param, tmp)
    srv = Server(str(tiny_dir), url, log=tmp / "server.log").start()
    yield srv
    srv.stop()
    if drop:
        drop()


@pytest.fixture(scope="module")
def alice(server):
    return signup(server.url, "alice@example.com")


@pytest.fixture(scope="module")
def bob(server):
    client = signup(server.url, "bob@example.com")
    key = client.post("/api/keys", json={"name": "tests"}).json()["key"]
    return httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def upload(client, name: str, content: bytes, mime: str = "text/plain", **form):
    return client.post("/api/documents", files={"file": (name, content, mime)}, data=form)


def error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


def test_upload_list_and_delete_with_a_session_and_a_key(alice, bob):
    conv = alice.post("/api/conversations", json={"title": "garden"}).json()["id"]
    r = upload(alice, "garden.txt", GARDEN.encode(), conversation_id=conv)
    assert r.status_code == 201, r.text
    garden = r.json()
    assert garden["filename"] == "garden.txt" and garden["mime"] == "text/plain" and garden["chunks"] == 1
    assert garden["conversation_id"] == conv and garden["bytes"] == len(GARDEN)
    r = upload(alice, "knots.html", SAILING.encode(), "text/html")
    assert r.status_code == 201 and r.json()["conversation_id"] is None
    knots = r.json()
    again = upload(alice, "same.txt", GARDEN.encode(), conversation_id=conv)
    assert again.status_code == 200 and again.json()["id"] == garden["id"]

    assert [d["id"] for d in alice.get("/api/documents").json()] == [knots["id"], garden["id"]]
    listed = alice.get("/api/documents", params={"conversation_id": conv}).json()
    assert [d["id"] for d in listed] == [garden["id"]]

    # Bob, with an API key, sees none of it and cannot delete it or list Alice's conversation.
    assert bob.get("/api/documents").json() == []
    assert error(bob.delete(f"/api/documents/{garden['id']}"), 404)["code"] == "not_found"
    r = bob.get("/api/documents", params={"conversation_id": conv})
    assert error(r, 404)["param"] == "conversation_id"
    assert error(upload(bob, "x.txt", b"mine", conversation_id=conv), 404)["param"] == "conversation_id"
    r = upload(bob, "notes.md", b"# Bob's notes\n\nNothing here.", "application/octet-stream")
    assert r.status_code == 201 and r.json()["mime"] == "text/markdown"

    # A cookie session must send the CSRF token with a write, like any other.
    no_csrf = httpx.Client(base_url=str(alice.base_url), cookies=alice.cookies, timeout=60)
    assert error(upload(no_csrf, "a.txt", b"text"), 403)["code"] == "csrf_failed"
    assert error(httpx.get(f"{alice.base_url}/api/documents"), 401)["code"] == "unauthenticated"

    assert alice.delete(f"/api/documents/{garden['id']}").status_code == 204
    assert [d["id"] for d in alice.get("/api/documents").json()] == [knots["id"]]
    assert error(alice.delete(f"/api/documents/{garden['id']}"), 404)["code"] == "not_found"


def test_refusals_are_openai_shaped(alice):
    body = error(upload(alice, "big.txt", b"a" * (MAX_DOCUMENT_BYTES + 1)), 413)
    assert body["type"] == "request_too_large"
    assert error(upload(alice, "empty.txt", b""), 400)["param"] == "file"
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    assert "binary" in error(upload(alice, "photo.txt", png), 400)["message"]
    latin = "naïve;café".encode("latin-1")
    assert "not UTF-8" in error(upload(alice, "latin.csv", latin, "text/csv"), 400)["message"]
    assert error(upload(alice, "tool.exe", b"MZ", "application/x-msdownload"), 415)["param"] == "file"
    assert error(alice.post("/api/documents", data={"conversation_id": ""}), 400)["param"] == "file"


def test_a_document_larger_than_the_general_body_limit_is_accepted(alice):
    # Past the 1 MB body cap of other routes (mostly spaces, so there is little to embed).
    text = b"First line of a long file.\n" + b" " * (1_500_000) + b"\nLast line of it."
    r = upload(alice, "long.txt", text)
    assert r.status_code == 201, r.text
    assert r.json()["bytes"] == len(text) and r.json()["chunks"] == 2
