"""Several model versions in one server: `default`, a second configured model directory and a
training run (`runs:NAME`) answer side by side, each answer naming its exact version, through
/v1 and /api alike; a version nobody uses is unloaded, the default stays."""

import shutil
import time

import openai
import pytest

from conftest import make_tiny_model
from server_util import Server, new_key, signup, sse_events


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir, tokenizer):
    tmp = tmp_path_factory.mktemp("pool")
    home = tmp / "home"
    second = make_tiny_model(tmp / "second-model", tokenizer, model_type="qwen2", seed=1)
    make_tiny_model(home / "runs" / "my-sft" / "final", tokenizer, seed=2, name="my-sft")
    env = {"CHATLOOP_HOME": str(home), "CHATLOOP_MODEL_IDLE_SECONDS": "2"}
    srv = Server([str(tiny_dir), str(second)], f"sqlite:///{tmp / 'chatloop.db'}", env=env,
                 log=tmp / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def alice(server):
    client = signup(server.url, "pool@example.com")
    return client, new_key(client)


def ask(client: openai.OpenAI, model: str) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello"}],
                                          max_tokens=12, temperature=0)


def test_each_reference_is_answered_by_its_own_version(server, alice):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=alice[1], max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny-llama:test", "tiny-qwen2:test"]
    answers = {}
    for ref, version in [("default", "tiny-llama:test"), ("tiny-llama:test", "tiny-llama:test"),
                         ("tiny-qwen2", "tiny-qwen2:test"), ("tiny-qwen2:test", "tiny-qwen2:test"),
                         ("runs:my-sft", "my-sft:test")]:
        r = ask(client, ref)
        assert r.model == version, ref
        answers.setdefault(version, set()).add(r.choices[0].message.content)
    assert all(len(texts) == 1 for texts in answers.values())  # one version, one greedy answer
    assert len({next(iter(texts)) for texts in answers.values()}) == 3  # three different models


def test_clients_cannot_load_arbitrary_paths(server, alice, tiny_dir):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=alice[1], max_retries=0)
    for ref in ["/etc", str(tiny_dir.parent), "runs:no-such-run", "no-such-model"]:
        with pytest.raises(openai.NotFoundError) as e:
            ask(client, ref)
        assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"


def test_conversations_use_their_own_model(server, alice):
    client, _ = alice
    assert [m["name"] for m in client.get("/api/models").json()] == ["default", "tiny-qwen2"]
    for model, version in [("tiny-qwen2", "tiny-qwen2:test"), ("runs:my-sft", "my-sft:test"), (None, "tiny-llama:test")]:
        conv = client.post("/api/conversations", json={"model": model} if model else {}).json()
        with client.stream("POST", f"/api/conversations/{conv['id']}/messages",
                           json={"content": "hi", "max_tokens": 6}) as r:
            events = sse_events(r)
        assert events[0]["assistant_message"]["model"] == version
        assert events[-2]["type"] == "done" and events[-2]["message"]["model"] == version
    assert client.post("/api/conversations", json={"model": "/etc/passwd"}).status_code == 404


def test_an_unused_version_is_unloaded_and_the_configured_ones_stay(server, alice):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=alice[1], max_retries=0)
    ask(client, "runs:my-sft")
    admin = alice[0]
    assert "my-sft:test" in admin.get("/api/admin/stats").json()["engine"]["loaded"]
    deadline = time.time() + 30
    while time.time() < deadline and "my-sft:test" in admin.get("/api/admin/stats").json()["engine"]["loaded"]:
        time.sleep(0.5)
    assert admin.get("/api/admin/stats").json()["engine"]["loaded"] == ["tiny-llama:test", "tiny-qwen2:test"]
    assert ask(client, "runs:my-sft").model == "my-sft:test"  # and loads again on demand


def test_a_retrained_run_is_served_as_its_new_version(server, alice, tokenizer, tmp_path):
    """The run's final/ is replaced (a new version): the next request gets the new one."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=alice[1], max_retries=0)
    home = server.env["CHATLOOP_HOME"]
    fresh = make_tiny_model(tmp_path / "retrained", tokenizer, seed=3, name="my-sft")
    manifest = (fresh / "manifest.json").read_text().replace('"version": "test"', '"version": "v2"')
    (fresh / "manifest.json").write_text(manifest)
    final = f"{home}/runs/my-sft/final"
    shutil.rmtree(final)
    shutil.copytree(fresh, final)
    assert ask(client, "runs:my-sft").model == "my-sft:v2"
