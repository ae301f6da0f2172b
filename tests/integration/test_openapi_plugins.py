"""OpenAPI plugins against a real HTTP service: the todo API of tests/plugin_service, served by uvicorn
on a free port, read through its ai-plugin.json manifest (FastAPI's generated OpenAPI 3.1) and through a
hand-written OpenAPI 3.0 YAML file; tools listed and called through the Toolbox."""

import json
import time

import pytest
from conftest import run_async
from plugin_service import BIG_BYTES, OPENAPI_YAML, serve
from server_util import free_port

from chatloop.errors import UsageError
from chatloop.tools.base import Toolbox
from chatloop.tools.openapi import MAX_RESPONSE_BYTES, OpenApiPlugin, plugin_sources

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def service():
    with serve(token=TOKEN) as running:
        yield running


def manifest(service, auth: dict | None = None) -> dict:
    config = {"manifest": f"{service.url}/.well-known/ai-plugin.json"}
    return config | ({"auth": auth} if auth is not None else {})


def with_toolbox(config: dict, use, name: str = "todo"):
    """Runs `await use(toolbox)` with a started toolbox holding one plugin; returns what it returns."""
    async def main():
        toolbox = Toolbox([OpenApiPlugin(name, config)])
        await toolbox.start()
        try:
            return await use(toolbox)
        finally:
            await toolbox.close()

    return run_async(main())


def test_a_manifest_url_gives_one_namespaced_tool_per_operation(service, monkeypatch):
    monkeypatch.setenv("TASKS_API_TOKEN", TOKEN)

    async def use(toolbox):
        return toolbox.failed(), {s.name: s for s in toolbox.specs()}

    failed, specs = with_toolbox(manifest(service, {"type": "bearer", "token_env": "TASKS_API_TOKEN"}), use)
    assert failed == {}
    assert set(specs) == {"todo__listTodos", "todo__getTodo", "todo__createTodo", "todo__deleteTodo", "todo__echo",
                          "todo__exportAll", "todo__oldTodos", "todo__elsewhere"}
    assert {n for n, s in specs.items() if s.read_only} == {"todo__listTodos", "todo__getTodo", "todo__echo",
                                                            "todo__exportAll", "todo__oldTodos", "todo__elsewhere"}
    assert all(s.source == "openapi:todo" for s in specs.values())
    create = specs["todo__createTodo"]
    assert "Add a to-do" in create.description and "Manage the user's to-do list" in create.description
    # the JSON body (an object) is merged into the arguments
    assert set(create.parameters["properties"]) == {"title", "done"}
    assert create.parameters["required"] == ["title"]
    assert specs["todo__getTodo"].parameters["required"] == ["todo_id"]
    assert "required" not in specs["todo__listTodos"].parameters
    assert specs["todo__listTodos"].parameters["properties"]["limit"]["maximum"] == 100


def test_each_operation_is_called_over_http(service):
    async def use(toolbox):
        listed = await toolbox.call("todo__listTodos", {"limit": 1})
        created = await toolbox.call("todo__createTodo", {"title": "call the plumber"})
        new_id = json.loads(created.content)["id"]
        got = await toolbox.call("todo__getTodo", {"todo_id": new_id})
        deleted = await toolbox.call("todo__deleteTodo", {"todo_id": new_id})
        gone = await toolbox.call("todo__getTodo", {"todo_id": new_id})
        echoed = await toolbox.call("todo__echo", {"tag": ["a b", "c&d=e"], "x-trace": "t-42"})
        return listed, created, got, deleted, gone, echoed

    listed, created, got, deleted, gone, echoed = with_toolbox(manifest(service, {"type": "bearer", "token": TOKEN}),
                                                               use)
    assert not listed.is_error and len(json.loads(listed.content)) == 1
    assert listed.content.startswith("[\n  {")  # JSON answers are pretty-printed
    assert not created.is_error and json.loads(created.content)["title"] == "call the plumber"
    assert not got.is_error and json.loads(got.content)["title"] == "call the plumber"
    assert not deleted.is_error and deleted.content.startswith("HTTP 204")
    assert gone.is_error and gone.content.startswith("HTTP 404") and "no to-do" in gone.content
    assert json.loads(echoed.content) == {"tag": ["a b", "c&d=e"], "trace": "t-42"}


def test_a_yaml_document_on_disk_with_a_base_url(service):
    async def use(toolbox):
        specs = {s.name: s for s in toolbox.specs()}
        created = await toolbox.call("todo__createTodo", {"title": "from YAML", "subtasks": [{"title": "x"}]})
        listed = await toolbox.call("todo__listTodos", {"limit": 100, "done": None})
        exported = await toolbox.call("todo__get_export", {})
        return specs, created, listed, exported

    config = {"openapi": str(OPENAPI_YAML), "base_url": service.url + "/", "auth": {"type": "bearer", "token": TOKEN}}
    specs, created, listed, exported = with_toolbox(config, use)
    assert set(specs) == {"todo__listTodos", "todo__createTodo", "todo__getTodo", "todo__deleteTodo",
                          "todo__get_export"}
    create = specs["todo__createTodo"].parameters
    assert set(create["properties"]) == {"title", "done", "subtasks"}  # `id` is readOnly: no input
    assert create["required"] == ["title"]
    assert create["properties"]["subtasks"]["items"] == {}  # the recursive $ref ends as "any value"
    listing = specs["todo__listTodos"].parameters["properties"]
    assert listing["limit"] == {"type": "integer", "minimum": 1, "maximum": 100, "description": "At most this many"}
    assert listing["done"] == {"type": ["boolean", "null"]}  # 3.0 nullable
    assert specs["todo__deleteTodo"].parameters["required"] == ["todo_id"]  # a path-level parameter
    assert not created.is_error and json.loads(created.content)["title"] == "from YAML"
    assert "from YAML" in listed.content
    assert not exported.is_error


def test_a_missing_or_wrong_token_is_an_error_result_with_status_401(service):
    async def use(toolbox):
        return await toolbox.call("todo__listTodos", {})

    for auth in ({"type": "none"}, {"type": "bearer", "token": "wrong"}):
        result = with_toolbox(manifest(service, auth), use)
        assert result.is_error and result.content.startswith("HTTP 401"), result.content


def test_a_manifest_asking_for_bearer_auth_needs_an_auth_setting(service, monkeypatch):
    with pytest.raises(UsageError, match=r"'todo'.*auth.*bearer"):
        run_async(OpenApiPlugin("todo", manifest(service)).start())
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    with pytest.raises(UsageError, match=r"'todo'.*NO_SUCH_TOKEN"):
        run_async(OpenApiPlugin("todo", manifest(service, {"type": "bearer", "token_env": "NO_SUCH_TOKEN"})).start())


def test_a_path_value_stays_one_encoded_segment(service):
    async def use(toolbox):
        return [await toolbox.call("todo__getTodo", {"todo_id": value}) for value in ("../x?y", "..", "1/../2")]

    before = len(service.paths)
    escaped, dots, slash = with_toolbox(manifest(service, {"type": "bearer", "token": TOKEN}), use)
    seen = service.paths[before:]
    assert seen[-3:] == [b"/todos/..%2Fx%3Fy", b"/todos/%2E%2E", b"/todos/1%2F..%2F2"]
    assert escaped.is_error and "HTTP 404" in escaped.content and "'../x?y'" in escaped.content
    assert dots.is_error and "no to-do '..'" in dots.content
    assert slash.is_error and "no to-do '1/../2'" in slash.content


def test_invalid_arguments_are_rejected_before_any_request(service):
    async def use(toolbox):
        before = len(service.paths)
        results = [await toolbox.call("todo__getTodo", {}), await toolbox.call("todo__listTodos", {"limit": "ten"}),
                   await toolbox.call("todo__createTodo", {"done": True})]
        return results, len(service.paths) - before

    results, requests = with_toolbox(manifest(service, {"type": "bearer", "token": TOKEN}), use)
    assert requests == 0
    assert all(r.is_error and "invalid arguments" in r.content for r in results)
    assert "todo_id" in results[0].content and "title" in results[2].content


def test_answers_are_read_up_to_a_megabyte(service):
    async def main():
        plugin = OpenApiPlugin("todo", manifest(service, {"type": "bearer", "token": TOKEN}))
        await plugin.start()
        try:
            from chatloop.tools.base import CallContext

            return await plugin.call("exportAll", {}, CallContext())
        finally:
            await plugin.close()

    out = run_async(main())
    assert BIG_BYTES > MAX_RESPONSE_BYTES
    assert not out.is_error
    assert out.text.startswith("x" * MAX_RESPONSE_BYTES) and out.text.endswith("[response cut at 1048576 bytes]")
    assert len(out.text) < MAX_RESPONSE_BYTES + 100


def test_redirects_are_followed_only_within_the_base_url(service):
    async def use(toolbox):
        return await toolbox.call("todo__oldTodos", {}), await toolbox.call("todo__elsewhere", {})

    before = len(service.paths)
    moved, elsewhere = with_toolbox(manifest(service, {"type": "bearer", "token": TOKEN}), use)
    assert not moved.is_error and len(json.loads(moved.content)) == 1  # /old-todos -> /todos?limit=1
    assert elsewhere.is_error and "refused" in elsewhere.content and "localhost" in elsewhere.content
    assert service.paths[before:][-3:] == [b"/old-todos", b"/todos", b"/elsewhere"]


def test_an_unreachable_server_is_a_quick_error_result():
    async def use(toolbox):
        started = time.perf_counter()
        result = await toolbox.call("todo__listTodos", {"limit": 2})
        return result, time.perf_counter() - started

    config = {"openapi": str(OPENAPI_YAML), "base_url": f"http://127.0.0.1:{free_port()}", "timeout_s": 5}
    result, seconds = with_toolbox(config, use)
    assert result.is_error and "ConnectError" in result.content
    assert seconds < 5


@pytest.mark.parametrize("text, why", [
    ("openapi: 3.0.0\npaths: [", "neither JSON nor YAML"),
    ('{"swagger": "2.0", "paths": {}}', "OpenAPI 3.0 or 3.1"),
    ("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters: [{$ref: '#/components/parameters/Nope'}]\n",
     "points at nothing"),
    ("openapi: 3.1.0\npaths: {}\n", "no operations"),
    ("openapi: 3.1.0\npaths:\n  /a:\n    get: {}\n", "servers"),  # relative server URL, a file, no base_url
])
def test_a_broken_document_fails_at_start_naming_the_plugin(tmp_path, text, why):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    config = {"openapi": str(path)} | ({} if why == "servers" else {"base_url": "http://127.0.0.1:9"})
    with pytest.raises(UsageError, match="'broken'") as caught:
        run_async(OpenApiPlugin("broken", config).start())
    assert why in str(caught.value) or (why == "servers" and "set base_url" in str(caught.value))

    async def use(toolbox):
        return toolbox.failed(), toolbox.specs()

    failed, specs = with_toolbox(config, use, name="broken")  # the toolbox leaves it out and goes on
    assert "broken" in failed and specs == []


@pytest.mark.parametrize("config, field", [
    ({}, "manifest"),
    ({"manifest": "a.json", "openapi": "b.yaml"}, "manifest"),
    ({"openapi": "file:///etc/passwd"}, "openapi"),
    ({"openapi": "b.yaml", "base_url": "ftp://example.com"}, "base_url"),
    ({"openapi": "b.yaml", "auth": {"type": "bearer"}}, "auth"),
    ({"openapi": "b.yaml", "auth": {"type": "basic", "token": "x"}}, "auth"),
    ({"openapi": "b.yaml", "timeout_s": 0}, "timeout_s"),
    ({"openapi": "b.yaml", "headers": {}}, "headers"),
])
def test_bad_settings_are_usage_errors_naming_the_field(config, field):
    with pytest.raises(UsageError, match=f"'todo': {field}") as caught:
        OpenApiPlugin("todo", config)
    assert caught.value.param == field


def test_plugin_sources_reads_the_openapi_plugins_section(service):
    sources = plugin_sources({"todo": manifest(service), "disk": {"openapi": str(OPENAPI_YAML)}})
    assert [(s.name, type(s).__name__) for s in sources] == [("todo", "OpenApiPlugin"), ("disk", "OpenApiPlugin")]
    with pytest.raises(UsageError, match="openapiPlugins"):
        plugin_sources(["todo"])
