"""The tool loop of a conversation through real HTTP: an answer's calls run, their results are
stored as `tool` messages, the model answers again; tools that are not read-only wait for the
user's approval. The default model (float32) is told which tool to call first (`tool_choice`), so
the chain is certain; what it writes into the arguments is its own."""

import json

import pytest

from server_util import Server, signup, sse_events

pytestmark = pytest.mark.slow
ROUNDS = 3  # answers per turn; the last is asked without tools


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toolloop")
    srv = Server("default", f"sqlite:///{tmp / 'chatloop.db'}", dtype="float32", log=tmp / "server.log",
                 env={"CHATLOOP_MAX_TOOL_ROUNDS": str(ROUNDS)}).start(300)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return signup(server.url, "tools@example.com")


def conversation(client, tools: list[str]) -> str:
    r = client.post("/api/conversations", json={"tools": tools})
    assert r.status_code == 201, r.text
    assert r.json()["tools"] == tools
    return r.json()["id"]


def send(client, conv_id: str, content: str, **body) -> list:
    with client.stream("POST", f"/api/conversations/{conv_id}/messages",
                       json={"content": content, "temperature": 0, "max_tokens": 48, **body}, timeout=300) as r:
        assert r.status_code == 200, r.read()
        return sse_events(r)


def of(events: list, kind: str) -> list[dict]:
    return [e for e in events if e != "[DONE]" and e["type"] == kind]


def kinds(events: list) -> list[str]:
    return [e if e == "[DONE]" else e["type"] for e in events if e == "[DONE]" or e["type"] != "delta"]


def test_tools_are_listed_with_their_sources(client):
    tools = {t["name"]: t for t in client.get("/api/tools").json()["tools"]}
    assert {"calculator", "current_time", "python", "search_documents"} <= tools.keys()
    assert tools["calculator"]["read_only"] and not tools["python"]["read_only"]
    assert tools["calculator"]["parameters"]["type"] == "object"


def test_unknown_tools_and_choices_are_refused(client):
    r = client.post("/api/conversations", json={"tools": ["calculator", "no_such_tool"]})
    assert r.status_code == 400 and "no_such_tool" in r.json()["error"]["message"]
    plain = conversation(client, [])
    r = client.post(f"/api/conversations/{plain}/messages", json={"content": "hi", "tool_choice": "calculator"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
    r = client.patch(f"/api/conversations/{plain}", json={"tools": ["calculator"]})
    assert r.status_code == 200 and r.json()["tools"] == ["calculator"]


def test_a_read_only_call_runs_and_the_model_answers_again(client):
    conv_id = conversation(client, ["calculator", "current_time"])
    events = send(client, conv_id, "What is 5 - 2 + 4? Use the calculator.", tool_choice="calculator")
    assert kinds(events)[:6] == ["start", "done", "tool_start", "tool_result", "assistant_start", "done"]
    assert events[-1] == "[DONE]"
    first = of(events, "done")[0]["message"]
    assert first["finish_reason"] == "tool_calls" and first["tool_calls"][0]["function"]["name"] == "calculator"
    call_id = first["tool_calls"][0]["id"]
    result = of(events, "tool_result")[0]["message"]
    assert result["role"] == "tool" and result["tool_call_id"] == call_id and result["parent_id"] == first["id"]
    assert result["tool"]["name"] == "calculator" and result["tool"]["duration_ms"] >= 0
    expression = json.loads(first["tool_calls"][0]["function"]["arguments"])["expression"]
    assert result["tool"]["arguments"] == {"expression": expression}
    assert result["content"]  # the value, or the calculator's reason for refusing the expression
    # each next answer continues from the result before it; the turn ends in an answer that calls
    # nothing, at the latest the last of ROUNDS (asked without tools)
    starts = [e["assistant_message"] for e in of(events, "assistant_start")]
    results = [e["message"] for e in of(events, "tool_result")]
    assert 1 <= len(starts) <= ROUNDS - 1
    for start in starts:
        assert start["parent_id"] in {r["id"] for r in results}
    final = of(events, "done")[-1]["message"]
    assert final["id"] == starts[-1]["id"] and final["status"] == "complete"
    assert final["finish_reason"] != "tool_calls"
    second = next(e["message"] for e in of(events, "done") if e["message"]["id"] == starts[0]["id"])
    assert second["prompt_tokens"] > first["prompt_tokens"]  # the result was part of what the model read

    stored = client.get(f"/api/conversations/{conv_id}").json()
    chain = [m["role"] for m in stored["messages"]]
    assert chain[:4] == ["user", "assistant", "tool", "assistant"] and chain[-1] == "assistant"
    assert stored["current_leaf_id"] == final["id"]


def test_a_tool_that_is_not_read_only_waits_for_approval(client, server):
    conv_id = conversation(client, ["python"])
    events = send(client, conv_id, "Run this Python code: print(6*7)", tool_choice="python")
    assert kinds(events) == ["start", "done", "approval", "[DONE]"]
    approval = events[-2]
    answer = approval["message"]
    assert answer["status"] == "awaiting_approval" and approval["calls"][0]["name"] == "python"
    assert not approval["calls"][0]["read_only"]
    stored = client.get(f"/api/conversations/{conv_id}").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]  # nothing ran

    stranger = signup(server.url, "stranger@example.com")
    r = stranger.post(f"/api/messages/{answer['id']}/approval", json={"approve": True})
    assert r.status_code == 404

    with client.stream("POST", f"/api/messages/{answer['id']}/approval", json={"approve": False}) as r:
        assert r.status_code == 200
        declined = sse_events(r)
    assert kinds(declined)[:4] == ["tool_start", "tool_result", "assistant_start", "done"]
    result = of(declined, "tool_result")[0]["message"]
    assert result["tool"]["is_error"] and "declined" in result["content"]

    again = client.post(f"/api/messages/{answer['id']}/approval", json={"approve": True})
    assert again.status_code == 400 and again.json()["error"]["code"] == "nothing_to_approve"


def test_an_approved_call_runs_in_the_sandbox(client):
    conv_id = conversation(client, ["python"])
    events = send(client, conv_id, "Run this Python code: print(6*7)", tool_choice="python")
    answer = events[-2]["message"]
    with client.stream("POST", f"/api/messages/{answer['id']}/approval", json={"approve": True}) as r:
        approved = sse_events(r)
    result = of(approved, "tool_result")[0]["message"]
    code = json.loads(answer["tool_calls"][0]["function"]["arguments"])["code"]
    assert result["tool"]["arguments"] == {"code": code}
    assert result["tool"]["duration_ms"] > 0 and result["content"]
    assert approved[-1] == "[DONE]"
