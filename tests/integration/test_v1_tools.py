"""Function calling through /v1/chat/completions, against the real server with the official `openai`
client: forced calls under ten varied JSON schemas (whole and streamed, every call checked with
`jsonschema`), `parallel_tool_calls`, OpenAI-shaped 400s for bad tools, and Open WebUI's traffic
shape (36 tools on every turn, streamed, tool_choice auto: content streams as it is written).

The models are randomly initialised (conftest `make_tiny_model`): whatever they say, the grammar
must still make every forced answer valid calls. Schemas bound every string and array so that even
a random model finishes within max_tokens.
"""

import json
import time

import httpx
import jsonschema
import openai
import pytest
from conftest import make_tiny_model
from server_util import Server, signup

from chatloop.bench.prefix import TOOLS as OPENWEBUI_TOOLS_FILE
from chatloop.models.tool_calls import MAX_PARALLEL_CALLS

OPENWEBUI_TOOLS = json.loads(OPENWEBUI_TOOLS_FILE.read_text())


def obj(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required,
            "additionalProperties": False}


def text(n: int) -> dict:
    return {"type": "string", "maxLength": n}


SCHEMAS = {
    "set_units": obj({"unit": {"type": "string", "enum": ["celsius", "fahrenheit", "kelvin"]},
                      "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo", "Lima"]}}),
    "create_user": obj({"user": obj({"name": text(10), "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                     "address": obj({"city": text(8), "zip": {"type": "string",
                                                                              "pattern": "^[0-9]{5}$"}})})}),
    "tag_document": obj({"doc_id": {"type": "integer", "minimum": 1, "maximum": 9999},
                         "tags": {"type": "array", "items": text(8), "minItems": 1, "maxItems": 3}}),
    "paginate": obj({"page": {"type": "integer", "minimum": 1, "maximum": 50},
                     "offset": {"type": "integer", "minimum": -5, "maximum": 5}}),
    "toggle_flags": obj({"enabled": {"type": "boolean"}, "verbose": {"type": "boolean"}}),
    "set_location": obj({"lat": {"type": "number", "minimum": -90, "maximum": 90},
                         "lon": {"type": "number", "minimum": -180, "maximum": 180}}),
    "search": obj({"query": text(20), "limit": {"type": "integer", "minimum": 1, "maximum": 20},
                   "lang": {"type": "string", "enum": ["en", "fr", "pt"]}}, required=["query"]),
    "book_flight": obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                        "day": {"type": "string", "format": "date"}}),
    "place_order": obj({
        "lines": {"type": "array", "minItems": 1, "maxItems": 3, "items": obj({
            "sku": {"type": "string", "pattern": "^[a-z]{2}[0-9]{2}$"},
            "qty": {"type": "integer", "minimum": 1, "maximum": 9},
            "gift": {"type": "boolean"}}, required=["sku", "qty"])},
        "notes": {"type": "array", "maxItems": 2, "items": {"type": "array", "maxItems": 2, "items": text(5)}}}),
    "lookup": obj({"target": {"anyOf": [obj({"id": {"type": "integer", "minimum": 0, "maximum": 999}}),
                                        {"type": "string", "enum": ["me", "all"]}, {"type": "null"}]},
                   "mode": {"const": "fast"}}),
}
TOOLS = [{"type": "function", "function": {"name": name, "description": f"Tool {name}", "parameters": schema}}
         for name, schema in SCHEMAS.items()]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokenizer):
    """A random tiny model with a long context, so that 36 tools' descriptions fit in its prompt."""
    tmp = tmp_path_factory.mktemp("v1-tools")
    model = make_tiny_model(tmp / "model", tokenizer, seed=3, context=16384, name="tiny-long")
    srv = Server(str(model), f"sqlite:///{tmp / 'chatloop.db'}", log=tmp / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server):
    return signup(server.url, "tools@example.com").post("/api/keys", json={"name": "tests"}).json()["key"]


@pytest.fixture(scope="module")
def oai(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def ask(**kw) -> dict:
    return {"model": "default", "messages": [{"role": "user", "content": "Do it."}], "tools": TOOLS,
            "max_tokens": 300, "temperature": 1.0, **kw}


def named(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def streamed(stream) -> tuple[str, list[dict], list[str]]:
    """(content, calls reassembled from tool_calls deltas, finish reasons) of a streamed answer."""
    content, calls, finishes = "", {}, []
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finishes += [choice.finish_reason] if choice.finish_reason else []
            for d in choice.delta.tool_calls or []:
                call = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = d.id or call["id"]
                call["name"] = d.function.name or call["name"]
                call["arguments"] += d.function.arguments or ""
    assert sorted(calls) == list(range(len(calls)))  # call indexes count up from 0
    return content, [calls[i] for i in sorted(calls)], finishes


def check(name: str, arguments: str) -> dict:
    args = json.loads(arguments)
    jsonschema.validate(args, SCHEMAS[name], format_checker=jsonschema.FormatChecker())
    return args


# --- forced calls under varied schemas ------------------------------------------------------------

@pytest.mark.parametrize("name", list(SCHEMAS))
def test_a_named_tool_choice_gives_one_schema_valid_call_whole_and_streamed(oai, name):
    for seed in (1,):
        choice = oai.chat.completions.create(**ask(tool_choice=named(name), seed=seed)).choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        [call] = choice.message.tool_calls
        assert call.function.name == name and call.id.startswith("call_")
        whole = check(name, call.function.arguments)

        content, calls, finishes = streamed(oai.chat.completions.create(**ask(tool_choice=named(name), seed=seed,
                                                                              stream=True)))
        assert finishes == ["tool_calls"] and not content
        [call] = calls
        assert call["name"] == name and call["id"].startswith("call_")
        assert check(name, call["arguments"]) == whole  # the same seed decodes the same call


SMALL = [t for t in TOOLS if t["function"]["name"] in ("set_units", "paginate", "toggle_flags", "lookup")]


def test_required_with_parallel_calls_gives_one_or_more_valid_calls(oai):
    counts = []
    for seed in range(4):
        choice = oai.chat.completions.create(**ask(tools=SMALL, tool_choice="required", seed=seed,
                                                   max_tokens=400)).choices[0]
        assert choice.finish_reason == "tool_calls", choice.message.content
        assert choice.message.content is None and choice.message.tool_calls
        for call in choice.message.tool_calls:
            check(call.function.name, call.function.arguments)
        assert len({c.id for c in choice.message.tool_calls}) == len(choice.message.tool_calls)
        counts.append(len(choice.message.tool_calls))
    assert max(counts) > 1, counts  # the array grammar lets a model make several calls at once
    assert max(counts) <= MAX_PARALLEL_CALLS

    content, calls, finishes = streamed(oai.chat.completions.create(**ask(tools=SMALL, tool_choice="required",
                                                                          seed=0, max_tokens=400, stream=True)))
    assert finishes == ["tool_calls"] and not content and len(calls) == counts[0]
    for call in calls:
        check(call["name"], call["arguments"])


def test_required_without_parallel_calls_gives_exactly_one_call(oai):
    for seed in range(4):
        choice = oai.chat.completions.create(**ask(tool_choice="required", seed=seed,
                                                   parallel_tool_calls=False)).choices[0]
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        check(call.function.name, call.function.arguments)


# --- validation: OpenAI's error shape --------------------------------------------------------------

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": obj({"city": text(10)})}}
CALLED = [{"role": "user", "content": "Weather in Oslo?"},
          {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
              "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}]


def fn(name: str, parameters=None) -> dict:
    return {"type": "function", "function": {"name": name, **({"parameters": parameters} if parameters else {})}}


BAD = [
    ({"tools": [fn("bad name!")]}, "tools[0].function.name", "invalid_value"),
    ({"tools": [fn("x" * 65)]}, "tools[0].function.name", "invalid_value"),
    ({"tools": [WEATHER, fn("ok"), WEATHER]}, "tools", "invalid_value"),
    ({"tools": [fn("f", {"type": "string"})]}, "tools[0].function.parameters", "invalid_value"),
    ({"tools": [fn("f", {"type": "object", "properties": {"x": {"type": "strin"}}})]},
     "tools[0].function.parameters", "invalid_value"),
    ({"tools": [WEATHER], "tool_choice": named("nope")}, "tool_choice", "invalid_value"),
    ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
    ({"tools": [WEATHER], "messages": CALLED + [{"role": "tool", "tool_call_id": "call_2", "content": "sunny"}]},
     "messages", "invalid_value"),
    ({"tools": [WEATHER], "messages": CALLED + [{"role": "tool", "content": "sunny"}]}, "messages", "invalid_value"),
    ({"tools": [WEATHER], "messages": [{"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]},
     "messages", "invalid_value"),
    # xgrammar cannot compile a lookbehind: a forced call under it is refused before any work
    ({"tools": [fn("f", obj({"x": {"type": "string", "pattern": "(?<=a)b"}}))], "tool_choice": named("f")},
     "tools", "invalid_schema"),
    ({"tools": [WEATHER, fn("f", obj({"x": {"type": "string", "pattern": "(a)\\1"}}))], "tool_choice": "required"},
     "tools", "invalid_schema"),
]


# the rest of a request, as an outside probe sent it: each a 400 naming its field (one was a 500)
BAD += [
    ({"messages": [{"role": "user", "content": [{"type": "image", "image": "abc"}]}]}, "messages[0].content",
     "invalid_value"),  # the app's own form of a stored upload is not a client's content part
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content", "invalid_value"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0]", "invalid_value"),
    ({"messages": [{"role": "user"}]}, "messages[0]", "invalid_value"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_value"),
    ({"model": ""}, "model", "invalid_value"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
    ({"stop": ""}, "stop", "invalid_value"),
    ({"tool_choice": "sometimes", "tools": [WEATHER]}, "tool_choice", "invalid_value"),
]


@pytest.mark.parametrize("body,param,code", BAD)
def test_bad_tools_are_openai_shaped_400s(server, key, body, param, code):
    r = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                   json={"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code), error
    assert error["message"]


def test_a_function_without_parameters_is_called_with_none(oai):
    """OpenAI: parameters left out means an empty parameter list (a small model had filled an open
    object with made-up arguments)."""
    for parameters in (None, {"type": "object", "properties": {}}):
        tool = fn("get_random_number", parameters)
        for choice in ("required", named("get_random_number")):
            message = oai.chat.completions.create(**ask(tools=[tool], tool_choice=choice, seed=1,
                                                        max_tokens=60)).choices[0].message
            assert message.tool_calls and all(json.loads(c.function.arguments) == {} for c in message.tool_calls)


def test_stop_sequences_do_not_cut_constrained_json(oai):
    """Stop sequences end free text; JSON held to a grammar ends where the JSON does."""
    schema = obj({"city": text(12), "country": text(12)})
    r = oai.chat.completions.create(**ask(tools=None, stop=['"', ","], seed=2, max_tokens=80, response_format={
        "type": "json_schema", "json_schema": {"name": "place", "schema": schema}}))
    assert set(json.loads(r.choices[0].message.content)) == {"city", "country"}
    choice = oai.chat.completions.create(**ask(tools=[WEATHER], tool_choice=named("get_weather"), stop=['"'],
                                               seed=2, max_tokens=80)).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert set(json.loads(choice.message.tool_calls[0].function.arguments)) == {"city"}


def test_a_model_is_retrieved_by_id_or_name(server, key, oai):
    [listed] = oai.models.list().data
    for name in (listed.id, "default"):
        assert oai.models.retrieve(name).id == listed.id
    with pytest.raises(openai.NotFoundError) as e:
        oai.models.retrieve("no-such-model")
    assert e.value.body["code"] == "model_not_found"


def test_tool_results_round_trip_and_a_schema_only_auto_cannot_compile_is_accepted(oai):
    answered = CALLED + [{"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18 C"}]
    r = oai.chat.completions.create(**ask(messages=answered, tools=[WEATHER], max_tokens=8))
    bare = oai.chat.completions.create(**ask(messages=CALLED, tools=[WEATHER], max_tokens=8))
    assert r.usage.prompt_tokens > bare.usage.prompt_tokens
    # in auto mode nothing is compiled, so a pattern xgrammar lacks does not stop the request
    odd = fn("f", obj({"x": {"type": "string", "pattern": "(?<=a)b"}}))
    assert oai.chat.completions.create(**ask(tools=[odd], max_tokens=4)).choices


# --- Open WebUI's traffic shape ---------------------------------------------------------------------

def test_openwebui_tool_set_is_realistic():
    size = len(json.dumps(OPENWEBUI_TOOLS))
    names = [t["function"]["name"] for t in OPENWEBUI_TOOLS]
    assert len(OPENWEBUI_TOOLS) == 36 and len(set(names)) == 36 and 20_000 <= size <= 30_000, size
    for t in OPENWEBUI_TOOLS:
        jsonschema.validators.validator_for(t["function"]["parameters"]).check_schema(t["function"]["parameters"])


def openwebui_turn(url: str, key: str, **kw) -> list[tuple[float, dict]]:
    """One streamed turn as Open WebUI sends it: [(seconds since it was sent, chunk)]."""
    body = {"model": "default", "stream": True, "tools": OPENWEBUI_TOOLS, "tool_choice": "auto",
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "Write a short poem about the sea."}], **kw}
    sent, events = time.perf_counter(), []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600,
                      headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                events.append((time.perf_counter() - sent, json.loads(line[len("data: "):])))
    return events


def assert_content_streams(events: list[tuple[float, dict]], timed: bool) -> None:
    """Content came as it was decoded: many content chunks, all before the final one; with `timed`
    (a model slow enough to measure), spread over the decoding, not in one burst at its end (a held
    answer arrives within milliseconds; no CPU decodes the default model at 5 ms a token)."""
    content = [(t, e) for t, e in events if e["choices"] and e["choices"][0]["delta"].get("content")]
    final = next(i for i, (_, e) in enumerate(events) if e["choices"] and e["choices"][0]["finish_reason"])
    usage = events[-1][1]["usage"]
    assert usage["prompt_tokens"] > 5000  # all 36 tools were in the prompt
    assert not any(e["choices"][0]["delta"].get("tool_calls") for _, e in events if e["choices"])
    text = "".join(e["choices"][0]["delta"]["content"] for _, e in content)
    assert text.strip() and not text.lstrip().startswith(("{", "<tool_call>", "```"))
    assert len(content) >= max(3, usage["completion_tokens"] // 2), (len(content), usage)
    assert all(events.index((t, e)) < final for t, e in content)
    if timed:
        first, last = content[0][0], content[-1][0]
        assert last - first > 0.005 * usage["completion_tokens"], (first, last, usage)


def test_openwebui_turn_with_36_tools_streams_content_as_it_is_written(server, key):
    events = openwebui_turn(server.url, key, max_tokens=48, temperature=0)
    assert_content_streams(events, timed=False)  # a tiny model decodes too fast to time


@pytest.mark.slow
def test_openwebui_turn_on_the_default_model_streams_content_as_it_is_written(tmp_path_factory, default_dir):
    tmp = tmp_path_factory.mktemp("v1-tools-default")
    srv = Server("default", f"sqlite:///{tmp / 'chatloop.db'}", log=tmp / "server.log").start(timeout=300)
    try:
        key = signup(srv.url, "owui-default@example.com").post("/api/keys", json={"name": "t"}).json()["key"]
        events = openwebui_turn(srv.url, key, max_tokens=64, temperature=0)
        assert_content_streams(events, timed=True)
    finally:
        srv.stop()
