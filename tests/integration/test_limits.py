"""Server limits: per-key rate limits (429 + Retry-After) and engine overload (503)."""

import concurrent.futures

import httpx
import pytest

from server_util import Server, new_key, signup


@pytest.fixture(scope="module")
def limited(tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp("limits")
    env = {"CHATLOOP_RATE_LIMIT_PER_MINUTE": "4", "CHATLOOP_MAX_WAITING": "1"}
    srv = Server(str(tiny_dir), f"sqlite:///{tmp / 'db.sqlite'}", env=env, log=tmp / "server.log")
    srv.proc_args = ["--max-batch", "1"]
    srv.start()
    yield srv
    srv.stop()


def test_rate_limit_answers_429_with_retry_after(limited):
    client = signup(limited.url, "rl@example.com")
    key = new_key(client)
    h = {"Authorization": f"Bearer {key}"}
    codes = [httpx.get(limited.url + "/v1/models", headers=h).status_code for _ in range(6)]
    # 4 per minute per user and per key: creating the key took one of the user's requests
    assert codes[:3] == [200] * 3 and codes[3:] == [429] * 3
    r = httpx.get(limited.url + "/v1/models", headers=h)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_overloaded_engine_answers_503(limited, tiny_dir):
    keys = []
    for i in range(4):  # one key per request: the per-key rate limit is not what we test here
        client = signup(limited.url, f"load{i}@example.com")
        keys.append(new_key(client))

    def call(key: str) -> httpx.Response:
        body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400,
                "temperature": 0}
        return httpx.post(limited.url + "/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {key}"}, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(call, keys))
    codes = sorted(r.status_code for r in responses)
    assert 503 in codes and 200 in codes, codes
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.json()["error"]["type"] == "overloaded_error" and busy.headers["retry-after"]
