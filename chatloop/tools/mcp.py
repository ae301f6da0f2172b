"""The MCP host: each server of an `"mcpServers"` config as a ToolSource, on the official SDK (mcp 2.x).

    servers = mcp_sources(load_mcp_config("mcp.json"))   # [McpServer], one per entry
    toolbox = Toolbox([*servers])                         # tools appear as SERVER__TOOL
    await toolbox.start()

A config entry is Claude Desktop's: `{"command", "args", "env", "cwd"}` runs a stdio server as a
child process; `{"url", "headers"}` talks streamable HTTP. docs/mcp.md is the user's guide.

Each server has one long-lived task that owns its connection: the SDK's context managers (process,
HTTP client, session) must be entered and left by the same task, so that task enters them, publishes
the connected `Client`, and waits; calls are plain requests on that client from whatever task makes
them (a cancelled call sends MCP's `notifications/cancelled` and leaves the session usable). When the
connection ends (the process exits, the HTTP transport fails, a call finds it closed) the task
restarts it after a backoff, and calls meanwhile fail at once with a message saying so. A stdio
server's stderr goes to the logger `chatloop.tools.mcp.SERVER`, never to the terminal.
"""

import asyncio
import json
import logging
import math
import os
import re
import time
from collections import deque
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, INVALID_REQUEST, Implementation

from chatloop import __version__
from chatloop.errors import ChatloopError, UsageError
from chatloop.tools.base import CallContext, ToolError, ToolOutput, ToolSpec

log = logging.getLogger(__name__)

SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,30}$")  # tools are SERVER__TOOL (base.py cuts SERVER at 30)
# What a stdio server inherits from our environment, besides the SDK's own short list (HOME, LOGNAME,
# PATH, SHELL, TERM, USER): locale, time zone and temp dir. Nothing else: our environment holds
# secrets (API keys, CHATLOOP_*) that third-party servers must not see; an entry's `env` adds more.
INHERITED_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
STDIO_KEYS = {"command", "args", "env", "cwd", "type"}
# How a broken connection shows in a request (besides MCPError CONNECTION_CLOSED).
TRANSPORT_ERRORS = (OSError, httpx2.HTTPError, anyio.ClosedResourceError, anyio.BrokenResourceError)
HTTP_KEYS = {"url", "headers", "type"}
# Settings other hosts keep in the same file (Claude Desktop, Cline, Cursor): accepted and ignored,
# except `disabled`, which leaves the server out (tools/config.py).
OTHER_HOSTS_KEYS = {"disabled", "autoApprove", "alwaysAllow", "timeout", "description", "name"}


# --- configuration ----------------------------------------------------------------------------------

def load_mcp_config(path: str | Path) -> dict[str, dict]:
    """The `"mcpServers"` object of a JSON config file, checked ({} when the file has none; other
    top-level keys, e.g. `"openapiPlugins"`, are left to their readers)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such MCP config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read the MCP config: {e}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: expected a JSON object with an \"mcpServers\" object in it")
    servers = document.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise UsageError(f"{path}: \"mcpServers\" must be an object of NAME: {{command... | url...}}")
    for name, entry in servers.items():
        try:
            check_entry(name, entry)
        except UsageError as e:
            raise UsageError(f"{path}: {e}") from None
    return servers


def mcp_sources(config: dict, **options) -> list["McpServer"]:
    """One McpServer per entry of `config`: the `"mcpServers"` object (what load_mcp_config returns)
    or a whole document holding one. `options` go to every McpServer (e.g. `backoff`)."""
    servers = config["mcpServers"] if isinstance(config.get("mcpServers"), dict) else config
    return [McpServer(name, entry, **options) for name, entry in servers.items()]


def check_entry(name: Any, entry: Any) -> dict:
    """`entry` as `{"command", "args", "env", "cwd"}` or `{"url", "headers"}`; UsageError naming the
    server and the field otherwise."""
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise UsageError(f"MCP server name {name!r}: use letters, digits, _ and - (at most 30 characters); "
                         "its tools are called NAME__TOOL")

    def bad(field: str, what: str) -> UsageError:
        return UsageError(f"MCP server {name!r}: \"{field}\" {what}", param=field)

    if not isinstance(entry, dict):
        raise UsageError(f"MCP server {name!r}: expected an object with \"command\" (stdio) "
                         "or \"url\" (HTTP)")
    kind = entry.get("type")
    if kind is not None and kind not in ("stdio", "http", "streamable-http", "streamableHttp"):
        raise bad("type", f"is {kind!r}; supported: stdio, http (streamable HTTP; SSE is not supported)")
    if ("command" in entry) == ("url" in entry):
        raise UsageError(f"MCP server {name!r}: give either \"command\" (a stdio server) or \"url\" "
                         "(a streamable HTTP server)")
    allowed = STDIO_KEYS if "command" in entry else HTTP_KEYS
    unknown = sorted(set(entry) - allowed - OTHER_HOSTS_KEYS)
    if unknown:  # other hosts' settings, or a typo: the server still runs, the log says what was ignored
        log.warning("MCP server %r: ignoring %s (settings: %s)", name, ", ".join(unknown),
                    ", ".join(sorted(allowed - {"type"})))
    if "command" in entry:
        if kind not in (None, "stdio"):
            raise bad("type", f"is {kind!r} but the entry has a \"command\" (a stdio server)")
        if not isinstance(entry["command"], str) or not entry["command"].strip():
            raise bad("command", "must be a non-empty string (the program to run)")
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise bad("args", "must be a list of strings")
        _check_strings(entry.get("env", {}), lambda what: bad("env", what))
        if "cwd" in entry and not (isinstance(entry["cwd"], str) and entry["cwd"]):
            raise bad("cwd", "must be a directory path")
    else:
        if kind == "stdio":
            raise bad("type", "is 'stdio' but the entry has a \"url\" (an HTTP server)")
        url = entry["url"]
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            raise bad("url", f"must be an http:// or https:// URL, not {url!r}")
        _check_strings(entry.get("headers", {}), lambda what: bad("headers", what))
    return entry


def _check_strings(value: Any, bad) -> None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad("must be an object of string values")


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """What a stdio server's environment is made of besides the SDK's defaults: a few harmless
    variables of ours, then the entry's `env`."""
    return {k: os.environ[k] for k in INHERITED_ENV if k in os.environ} | extra


# --- the server -----------------------------------------------------------------------------------------

class McpServer:
    """One MCP server as a ToolSource: its tools by their MCP names, calls as `tools/call`."""

    recovers = True  # a failed start keeps retrying: Toolbox.refresh() picks the tools up once it is up
    connect_timeout_s = 60.0  # spawn/connect + handshake + tools/list (an `npx` server may install first)
    stable_s = 60.0  # up this long, the next failure starts the backoff over
    close_timeout_s = 10.0  # the SDK's stdio shutdown takes at most ~6 s (stdin close, TERM, KILL)

    def __init__(self, name: str, config: dict, *, backoff: tuple[float, ...] = (1, 2, 4, 8, 16, 30, 60)):
        self.name = name
        self.config = check_entry(name, config)
        if not backoff or any(not isinstance(d, int | float) or d < 0 for d in backoff):
            raise ValueError(f"MCP server {name!r}: backoff must be non-negative delays, not {backoff!r}")
        self.backoff = tuple(backoff)
        self.log = logging.getLogger(f"{__name__}.{name}")
        self._client: Client | None = None  # set while connected
        self._specs: list[ToolSpec] | None = None  # the last listing (kept while down)
        self._down = "it is starting"  # why there is no client
        self._retry_at: float | None = None  # monotonic time of the next attempt
        self._up_since: float | None = None  # when the current connection came up
        self._closing = False
        self._task: asyncio.Task | None = None

    def __repr__(self) -> str:
        where = self.config.get("url") or self.config["command"]
        return f"McpServer({self.name!r}, {where!r})"

    # --- ToolSource ---

    async def start(self) -> None:
        """Connect (the first try); raises why it failed, while retrying in the background."""
        if self._closing:
            raise ChatloopError(f"MCP server {self.name} is closed")
        if self._task is None:
            self._kick, self._stop = asyncio.Event(), asyncio.Event()
            self._scope: anyio.CancelScope | None = None
            self._first = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(), name=f"mcp:{self.name}")
        await asyncio.shield(self._first)
        if self._client is None:
            raise ChatloopError(self._down_message())

    async def list_tools(self) -> list[ToolSpec]:
        """The server's tools, fetched afresh while it is up (they may change), else the last listing."""
        client = self._client
        if client is not None:
            try:
                self._specs = await self._fetch_specs(client)
            except (MCPError, *TRANSPORT_ERRORS) as e:
                self.log.warning("MCP server %s: listing tools failed: %s", self.name, describe(e))
        if self._specs is None:
            raise ChatloopError(self._down_message())
        return list(self._specs)

    async def call(self, name: str, arguments: dict, context: CallContext) -> ToolOutput:
        client = self._client
        if client is None:
            raise ToolError(self._down_message())
        try:
            result = await client.call_tool(name, arguments)
        except MCPError as e:
            if _lost(e):
                self._lose(client, "the connection closed")
                raise ToolError(f"the MCP server {self.name} went down during the call; restarting it") from e
            raise ToolError(f"the MCP server {self.name} refused the call: {e.error.message}") from e
        except TRANSPORT_ERRORS as e:
            self._lose(client, describe(e))
            raise ToolError(f"the MCP server {self.name} went down during the call ({describe(e)}); "
                            "restarting it") from e
        return ToolOutput(render(result.content, result.structured_content), result.is_error,
                          result.structured_content)

    async def close(self) -> None:
        """Disconnect and stop the server's process (if it has one); idempotent."""
        self._closing = True
        if self._task is None:
            return
        self._stop.set()
        self._kick.set()
        if self._client is None and self._scope is not None:
            self._scope.cancel()  # connecting: stop waiting for it (the SDK still reaps the process)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.close_timeout_s)
        except TimeoutError:
            self.log.warning("MCP server %s did not shut down within %g s; cancelling it", self.name,
                             self.close_timeout_s)
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    # --- the owner task ---

    async def _run(self) -> None:
        failures = 0
        try:
            while not self._closing:
                self._retry_at = self._up_since = None
                try:
                    reason = await self._serve()
                except Exception as e:  # any failure of a connection is a reason to restart it
                    reason = describe(e)
                    self.log.debug("MCP server %s failed", self.name, exc_info=True)
                self._client = None
                if self._closing:
                    break
                if self._up_since is not None and time.monotonic() - self._up_since >= self.stable_s:
                    failures = 0
                delay = self.backoff[min(failures, len(self.backoff) - 1)]
                failures += 1
                self._down, self._retry_at = reason, time.monotonic() + delay
                self.log.warning("MCP server %s is down (%s); retrying in %g s", self.name, reason, delay)
                if not self._first.done():
                    self._first.set_result(None)
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        except Exception as e:  # a bug of ours: say so in the log and in every call's error
            self.log.exception("MCP server %s: its connection task failed", self.name)
            self._down = f"the host's connection task failed: {describe(e)}"
        finally:
            self._client, self._retry_at = None, None
            if not self._first.done():
                self._first.set_result(None)

    async def _serve(self) -> str | None:
        """One connection, from connect to loss: why it ended (None: closing)."""
        stderr_tail: deque[str] = deque(maxlen=5)
        eof = asyncio.Event()  # the stdio server's stderr closed (it exited, or closed it)
        async with anyio.create_task_group() as pumps:
            stderr = None
            if "command" in self.config:
                read_fd, write_fd = os.pipe()
                stderr = _WriteEnd(write_fd)
                pumps.start_soon(self._pump_stderr, read_fd, stderr_tail, eof)
            try:
                reason = await self._session(stderr, eof)
            except Exception as e:  # reported as the reason, with the server's last words
                reason = describe(e)
                self.log.debug("MCP server %s failed", self.name, exc_info=True)
            finally:
                if stderr is not None:
                    stderr.close()
            with anyio.move_on_after(1):  # the rest of its stderr (a grandchild may hold the pipe open)
                await eof.wait()
            pumps.cancel_scope.cancel()
        if reason is not None and stderr_tail and self._up_since is None:  # it never came up: say why
            reason += f"; its stderr ends: {stderr_tail[-1]!r}"
        return reason

    async def _session(self, stderr: "_WriteEnd | None", eof: asyncio.Event) -> str | None:
        with anyio.CancelScope(deadline=anyio.current_time() + self.connect_timeout_s) as scope:
            self._scope = scope
            async with AsyncExitStack() as stack:
                client = Client(await self._transport(stack, stderr), cache=None,
                                client_info=Implementation(name="chatloop", version=__version__),
                                logging_callback=self._server_log)
                await stack.enter_async_context(client)
                if stderr is not None:
                    stderr.close()  # the child has its copy; EOF at our end now means the child is gone
                self._specs = await self._fetch_specs(client)
                scope.deadline = math.inf
                if self._closing:
                    return None
                self._kick.clear()
                self._client, self._down, self._up_since = client, "", time.monotonic()
                self.log.info("MCP server %s is up (%s, %d tools)", self.name, client.protocol_version,
                              len(self._specs))
                if not self._first.done():
                    self._first.set_result(None)
                while True:
                    waiter = asyncio.ensure_future(self._kick.wait())
                    eof_waiter = asyncio.ensure_future(eof.wait())
                    try:
                        await asyncio.wait([waiter, eof_waiter], return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                        eof_waiter.cancel()
                    if self._closing:
                        return None
                    if self._kick.is_set():
                        return self._down or "the connection closed"
                    # stderr closed: the process exited, or (rarely) just closed its stderr; ask it.
                    try:
                        with anyio.fail_after(10):
                            await client.list_tools()
                    except TimeoutError:
                        return "its stderr closed and it does not answer"
                    except Exception as e:  # any failure here means it is gone
                        return "the process exited" if isinstance(e, MCPError) and _lost(e) else describe(e)
                    eof = asyncio.Event()  # alive without stderr: only a failing call can tell now
        if scope.cancelled_caught:
            return None if self._closing else f"no answer within {self.connect_timeout_s:g} s"
        return None

    async def _transport(self, stack: AsyncExitStack, stderr: "_WriteEnd | None"):
        if "command" in self.config:
            params = StdioServerParameters(command=self.config["command"], args=self.config.get("args", []),
                                           env=server_env(self.config.get("env", {})),
                                           cwd=self.config.get("cwd"))
            return stdio_client(params, errlog=stderr)
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=self.config.get("headers"), timeout=httpx2.Timeout(30, read=300)))
        return streamable_http_client(self.config["url"], http_client=http)

    async def _fetch_specs(self, client: Client) -> list[ToolSpec]:
        tools, cursor = [], None
        for _ in range(100):  # a server whose pages never end cannot hang us
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        specs = []
        for tool in tools:
            notes = tool.annotations
            specs.append(ToolSpec(name=tool.name, description=tool.description or "",
                                  parameters=tool.input_schema or {"type": "object"},
                                  read_only=bool(notes and notes.read_only_hint), source=f"mcp:{self.name}",
                                  title=tool.title or (notes.title if notes else None)))
        return specs

    async def _pump_stderr(self, fd: int, tail: deque, eof: asyncio.Event) -> None:
        """The server's stderr, line by line, to our log."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(fd, "rb", buffering=0))
        buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                lines = (buffer + chunk).split(b"\n")
                buffer = lines.pop() if chunk else b""
                if len(buffer) > 8192:  # a line without end: log it in pieces
                    lines.append(buffer)
                    buffer = b""
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip()
                    if line:
                        tail.append(line[:300])
                        self.log.info("[%s] %s", self.name, line)
                if not chunk:
                    eof.set()
                    return
        finally:
            transport.close()

    async def _server_log(self, params) -> None:
        """A `notifications/message` from the server."""
        level = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
                 "warning": logging.WARNING}.get(params.level, logging.ERROR)
        self.log.log(level, "[%s] %s", self.name, params.data)

    def _lose(self, client: Client, reason: str) -> None:
        """A call found the connection gone: stop using it and have the owner task restart it."""
        if self._client is client:
            self._client, self._down = None, reason
            self._kick.set()

    def _down_message(self) -> str:
        if self._closing:
            return f"the MCP server {self.name} is closed"
        if self._task is not None and self._task.done():
            return f"the MCP server {self.name} is stopped ({self._down})"
        if self._retry_at is None:
            return f"the MCP server {self.name} is not connected ({self._down}); reconnecting now"
        wait = max(0.0, self._retry_at - time.monotonic())
        return f"the MCP server {self.name} is down ({self._down}); retrying in {wait:.0f} s"


class _WriteEnd:
    """The write end of the pipe a stdio server's stderr goes to, closed exactly once (a second
    os.close could close an unrelated file that reused the number)."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    def fileno(self) -> int:
        assert self.fd is not None, "the stderr pipe is already closed"
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _lost(e: MCPError) -> bool:
    """Whether an MCP error means the connection is gone (not that the server refused a request)."""
    # An HTTP server that restarted forgets our session: the transport answers 404 as this error.
    terminated = e.code == INVALID_REQUEST and e.error.message == "Session terminated"
    return e.code == CONNECTION_CLOSED or terminated


def describe(e: BaseException) -> str:
    """One line for why a connection failed (the first real error inside exception groups)."""
    while isinstance(e, BaseExceptionGroup):
        inner = [x for x in e.exceptions if not isinstance(x, asyncio.CancelledError)] or list(e.exceptions)
        e = inner[0]
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"cannot run {e.filename!r}: no such file or command"
    if isinstance(e, MCPError):
        return e.error.message
    if isinstance(e, httpx2.ConnectError):
        return f"cannot connect: {e}"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- results ------------------------------------------------------------------------------------------

def render(content: list, structured: Any = None) -> str:
    """A tool result's content blocks as text for the model: text as is, other media described."""
    parts = []
    for block in content:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {block.mime_type}, {_b64_size(block.data)} bytes]")
        elif kind == "resource_link":
            parts.append(f"[resource link: {block.name} {block.uri}]")
        elif kind == "resource":
            res = block.resource
            if getattr(res, "text", None) is not None:
                parts.append(f"[resource {res.uri}]\n{res.text}")
            else:
                kind = res.mime_type or "binary"
                parts.append(f"[resource {res.uri}: {kind}, {_b64_size(res.blob)} bytes]")
        else:
            parts.append(f"[{kind or type(block).__name__} content]")
    if not parts and structured is not None:
        parts.append(json.dumps(structured, ensure_ascii=False))
    return "\n".join(parts)


def _b64_size(data: str) -> int:
    return len(data.rstrip("=")) * 3 // 4
