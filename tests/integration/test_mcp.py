"""The MCP host (chatloop/tools/mcp.py) against real MCP servers: tests/mcp_servers/echo_server.py
(written with the SDK) over stdio and streamable HTTP, and the published `mcp-server-time`.

    .venv/bin/python -m pytest tests/integration/test_mcp.py
"""

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import run_async
from server_util import free_port

from chatloop.errors import ChatloopError, UsageError
from chatloop.tools.base import Toolbox, ToolLimits
from chatloop.tools.mcp import McpServer, load_mcp_config, mcp_sources

ECHO = str(Path(__file__).resolve().parents[1] / "mcp_servers" / "echo_server.py")
TIME = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}


def echo(**extra) -> dict:
    return {"command": sys.executable, "args": [ECHO], **extra}


def children() -> set[int]:
    """Our live child processes (zombies count: a child not yet reaped is a leak too)."""
    me, found = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == me:
            found.add(int(stat.parent.name))
    return found


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def until_ok(toolbox: Toolbox, name: str, arguments: dict, within: float = 15.0):
    """Call until the call succeeds; returns (result, the errors seen before)."""
    errors, deadline = [], time.monotonic() + within
    while True:
        result = await toolbox.call(name, arguments)
        if not result.is_error:
            return result, errors
        errors.append(result.content)
        assert time.monotonic() < deadline, f"{name} did not work again: {errors[-3:]}"
        await asyncio.sleep(0.1)


def http_echo(port: int) -> subprocess.Popen:
    """The echo server over streamable HTTP on `port`, once it accepts connections."""
    process = subprocess.Popen([sys.executable, ECHO, "--http", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the HTTP echo server did not come up (exit {process.poll()})") from None
            time.sleep(0.05)


# --- stdio -------------------------------------------------------------------------------------------

def test_stdio_server_tools_work_through_the_toolbox_and_close_leaves_no_process(caplog, monkeypatch):
    monkeypatch.setenv("CHATLOOP_TEST_SECRET", "do-not-leak")
    before = children()

    async def scenario():
        server = McpServer("echo", echo(env={"GREETING": "hello"}))
        toolbox = Toolbox([server], ToolLimits(timeout_s=2, max_output_chars=1000))
        await toolbox.start()
        assert toolbox.failed() == {}
        specs = {s.name: s for s in toolbox.specs()}
        assert {"echo__add", "echo__echo", "echo__slow", "echo__fail", "echo__big", "echo__pid"} <= set(specs)
        assert specs["echo__pid"].read_only and specs["echo__pid"].title == "Process id"
        assert not specs["echo__add"].read_only and specs["echo__add"].source == "mcp:echo"
        assert specs["echo__add"].parameters["required"] == ["a", "b"]

        added = await toolbox.call("echo__add", {"a": 2, "b": 3})
        assert (added.content, added.is_error, added.data) == ("5", False, {"result": 5})
        failed = await toolbox.call("echo__fail", {"message": "boom"})
        assert failed.is_error and "boom" in failed.content
        bad = await toolbox.call("echo__add", {"a": "two", "b": 3})  # the schema from tools/list applies
        assert bad.is_error and "invalid arguments" in bad.content
        big = await toolbox.call("echo__big", {"chars": 5000})
        assert big.truncated and big.content.startswith("x" * 1000) and "5000 characters" in big.content
        picture = await toolbox.call("echo__pixel", {})
        assert picture.content == "a pixel\n[image: image/png, 67 bytes]"

        # A call past the timeout is cancelled; the session goes on serving.
        started = time.monotonic()
        slow = await toolbox.call("echo__slow", {"seconds": 20})
        assert slow.is_error and "did not finish within 2 s" in slow.content
        assert time.monotonic() - started < 5
        assert (await toolbox.call("echo__echo", {"text": "still here"})).content == "still here"

        # The environment: the entry's env, the safe basics, none of our secrets.
        assert (await toolbox.call("echo__env", {"name": "GREETING"})).content == "hello"
        assert (await toolbox.call("echo__env", {"name": "PATH"})).content == os.environ["PATH"]
        assert (await toolbox.call("echo__env", {"name": "CHATLOOP_TEST_SECRET"})).content == "<unset>"

        # stderr goes to our log, one record per line.
        with caplog.at_level(logging.INFO, logger="chatloop.tools.mcp"):
            await toolbox.call("echo__shout", {"text": "a line on stderr"})
            for _ in range(50):
                if any("a line on stderr" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
        record = next(r for r in caplog.records if "a line on stderr" in r.getMessage())
        assert record.name == "chatloop.tools.mcp.echo" and record.getMessage() == "[echo] a line on stderr"

        pid = int((await toolbox.call("echo__pid", {})).content)
        assert pid in children()
        await toolbox.close()
        after = await toolbox.call("echo__echo", {"text": "closed"})
        assert after.is_error and "closed" in after.content
        return pid

    pid = run_async(scenario())
    assert gone(pid)
    assert children() - before == set()


def test_killed_stdio_server_is_restarted_with_growing_backoff(caplog):
    async def kill_and_wait(toolbox: Toolbox) -> int:
        """Kill the server's process; the next call fails at once, a later one reaches a new process."""
        pid = int((await toolbox.call("echo__pid", {})).content)
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        down = await toolbox.call("echo__pid", {})
        assert down.is_error and "echo" in down.content
        assert "down" in down.content or "restarting" in down.content
        assert time.monotonic() - started < 1, "a call to a dead server must fail at once"
        result, errors = await until_ok(toolbox, "echo__pid", {})
        assert any("is down" in e and "retrying in" in e for e in errors), errors
        assert int(result.content) != pid and gone(pid)
        return pid

    async def scenario():
        toolbox = Toolbox([McpServer("echo", echo(), backoff=(0.5, 1.5))])
        await toolbox.start()
        with caplog.at_level(logging.INFO, logger="chatloop.tools.mcp"):
            await kill_and_wait(toolbox)
            await kill_and_wait(toolbox)  # up for less than a minute: the next delay applies
        assert (await toolbox.call("echo__add", {"a": 1, "b": 1})).content == "2"
        await toolbox.close()

    run_async(scenario())
    events = [(r.created, r.getMessage()) for r in caplog.records if r.name == "chatloop.tools.mcp.echo"]
    downs = [(t, m) for t, m in events if "is down" in m]
    assert [m.rsplit("retrying in ", 1)[1] for _, m in downs] == ["0.5 s", "1.5 s"], downs
    for went_down, message in downs:
        came_up = min(t for t, m in events if "is up" in m and t > went_down)
        delay = float(message.rsplit("retrying in ", 1)[1].split()[0])
        assert came_up - went_down >= delay, f"restarted {came_up - went_down:.2f} s after: {message}"


def test_same_tool_names_on_two_servers_do_not_collide():
    async def scenario():
        toolbox = Toolbox(mcp_sources({"mcpServers": {"left": echo(), "right": echo()}}))
        await toolbox.start()
        names = [s.name for s in toolbox.specs()]
        assert "left__pid" in names and "right__pid" in names and len(names) == len(set(names))
        left = int((await toolbox.call("left__pid", {})).content)
        right = int((await toolbox.call("right__pid", {})).content)
        assert left != right
        assert (await toolbox.call("right__echo", {"text": "r"})).content == "r"
        await toolbox.close()
        return left, right

    assert all(gone(pid) for pid in run_async(scenario()))


def test_a_server_that_never_answers_fails_start_and_is_reaped():
    before = children()

    async def scenario():
        server = McpServer("mute", {"command": sys.executable, "args": ["-c", "import time; time.sleep(60)"]},
                           backoff=(30,))
        server.connect_timeout_s = 1.0
        started = time.monotonic()
        with pytest.raises(ChatloopError, match="no answer within 1 s"):
            await server.start()
        assert time.monotonic() - started < 10
        with pytest.raises(ChatloopError, match="mute is down"):
            await server.list_tools()
        started = time.monotonic()
        await server.close()  # during the backoff: at once
        assert time.monotonic() - started < 2

    run_async(scenario())
    assert gone_all(children() - before)


def gone_all(pids: set[int]) -> bool:
    return all(gone(p) for p in pids)


# --- a published server --------------------------------------------------------------------------------

def test_published_time_server_answers_get_current_time():
    before = children()

    async def scenario():
        toolbox = Toolbox([McpServer("time", TIME)])
        await toolbox.start()
        specs = {s.name: s for s in toolbox.specs()}
        assert {"time__get_current_time", "time__convert_time"} <= set(specs)
        assert specs["time__get_current_time"].read_only
        assert "timezone" in specs["time__get_current_time"].parameters["properties"]
        result = await toolbox.call("time__get_current_time", {"timezone": "Asia/Tokyo"})
        assert not result.is_error, result.content
        answer = json.loads(result.content)
        when = datetime.fromisoformat(answer["datetime"])
        assert answer["timezone"] == "Asia/Tokyo" and when.utcoffset() == timedelta(hours=9)
        assert abs((when - datetime.now(when.tzinfo)).total_seconds()) < 120
        wrong = await toolbox.call("time__get_current_time", {"timezone": "Nowhere/Atlantis"})
        assert wrong.is_error and "Nowhere/Atlantis" in wrong.content
        assert children() - before, "the server runs as our child"
        await toolbox.close()

    run_async(scenario())
    assert gone_all(children() - before)


# --- streamable HTTP -------------------------------------------------------------------------------

def test_http_server_recovers_from_a_late_start_and_a_restart():
    port = free_port()
    config = {"url": f"http://127.0.0.1:{port}/mcp", "headers": {"Authorization": "Bearer test"}}
    process = None

    async def scenario():
        nonlocal process
        server = McpServer("web", config, backoff=(0.3,))
        toolbox = Toolbox([server], ToolLimits(timeout_s=2))
        await toolbox.start()  # nothing listens yet: left out, retried in the background
        assert "web" in toolbox.failed() and "cannot connect" in toolbox.failed()["web"]
        assert toolbox.specs() == []

        process = http_echo(port)
        deadline = time.monotonic() + 15
        while not toolbox.spec("web__add"):
            assert time.monotonic() < deadline, toolbox.failed()
            await asyncio.sleep(0.2)
            await toolbox.refresh()
        assert (await toolbox.call("web__add", {"a": 20, "b": 22})).content == "42"
        assert (await toolbox.call("web__header", {"name": "authorization"})).content == "Bearer test"
        failed = await toolbox.call("web__fail", {"message": "over http"})
        assert failed.is_error and "over http" in failed.content
        slow = await toolbox.call("web__slow", {"seconds": 20})
        assert slow.is_error and "did not finish" in slow.content
        assert (await toolbox.call("web__echo", {"text": "after"})).content == "after"

        process.kill()
        process.wait()
        started = time.monotonic()
        lost = await toolbox.call("web__echo", {"text": "anyone?"})
        assert lost.is_error and "web" in lost.content and time.monotonic() - started < 2
        process = http_echo(port)
        result, _ = await until_ok(toolbox, "web__echo", {"text": "back"})
        assert result.content == "back"
        await toolbox.close()

    try:
        run_async(scenario())
    finally:
        if process is not None:
            process.kill()
            process.wait()


# --- configuration ------------------------------------------------------------------------------------

def test_config_file_is_read_and_checked(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"time": TIME, "web": {"url": "http://127.0.0.1:1/mcp"}},
                                "openapiPlugins": {"pets": {"url": "http://example.invalid/openapi.json"}}}))
    servers = load_mcp_config(path)
    assert set(servers) == {"time", "web"}
    assert [(s.name, type(s)) for s in mcp_sources(servers)] == [("time", McpServer), ("web", McpServer)]
    assert [s.name for s in mcp_sources({"mcpServers": servers})] == ["time", "web"]

    (tmp_path / "other.json").write_text('{"openapiPlugins": {}}')
    assert load_mcp_config(tmp_path / "other.json") == {}

    def problem(text: str) -> str:
        path.write_text(text)
        with pytest.raises(UsageError) as caught:
            load_mcp_config(path)
        assert str(path) in str(caught.value)
        return str(caught.value)

    with pytest.raises(UsageError, match=r"missing\.json: no such MCP config file"):
        load_mcp_config(tmp_path / "missing.json")
    assert "line 2" in problem('{"mcpServers":\n {,}}')
    assert "JSON object" in problem("[1, 2]")
    assert '"mcpServers" must be an object' in problem('{"mcpServers": []}')
    assert "'t': \"args\" must be a list" in problem('{"mcpServers": {"t": {"command": "x", "args": "-v"}}}')
    assert "'t': \"env\"" in problem('{"mcpServers": {"t": {"command": "x", "env": {"N": 1}}}}')
    assert "either \"command\"" in problem('{"mcpServers": {"t": {"args": []}}}')
    assert "\"url\" must be an http" in problem('{"mcpServers": {"t": {"url": "ftp://x"}}}')
    assert "\"headers\"" in problem('{"mcpServers": {"t": {"url": "http://x", "headers": ["a"]}}}')
    path.write_text('{"mcpServers": {"t": {"command": "x", "autoApprove": [], "disabled": false}}}')
    assert load_mcp_config(path)["t"]["autoApprove"] == []  # other hosts' settings are ignored, not refused
    assert "SSE is not supported" in problem('{"mcpServers": {"t": {"type": "sse", "url": "http://x"}}}')
    assert "letters, digits" in problem('{"mcpServers": {"my server": {"command": "x"}}}')
    with pytest.raises(UsageError, match="'t': \"command\" must be a non-empty string"):
        McpServer("t", {"command": ""})
