"""The tool protocol: what every tool is, however it is provided (built in, an MCP server, an
OpenAPI plugin), and the one place tools are called.

    toolbox = Toolbox([Builtins(...), McpServers(config), OpenApiPlugins(config)])
    await toolbox.start()                      # starts sources (MCP servers), lists their tools
    toolbox.specs()                            # [ToolSpec]: namespaced names, JSON schemas
    result = await toolbox.call("calculator", {"expression": "5-2+4"}, CallContext(user_id=...))
    await toolbox.close()

A `ToolSource` lists tools and runs calls by their *local* name; the toolbox namespaces them (a
built-in keeps its name; a server's or plugin's tool is `SOURCE__TOOL`, as OpenAI function names
allow: letters, digits, `_` and `-`, at most 64), checks arguments against the tool's JSON schema,
and applies the limits every call gets: a timeout, an output size limit, and errors (a bad
argument, a timeout, a crashed server, an exception) returned to the model as an error result —
a tool call never raises into the chat loop.
"""

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

log = logging.getLogger(__name__)

NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEPARATOR = "__"


def safe_name(text: str, limit: int = 64) -> str:
    """`text` as a function-name part: other characters become `_`, cut to `limit`."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "tool"
    return name[:limit]


@dataclass(frozen=True)
class ToolSpec:
    """One tool as a model and a user see it."""

    name: str  # the local name within its source (the toolbox namespaces it)
    description: str
    parameters: dict  # a JSON schema of an object
    read_only: bool = False  # runs without asking the user (web UI: others ask for approval)
    source: str = "builtin"  # builtin | mcp:SERVER | openapi:PLUGIN
    title: str | None = None

    def openai(self) -> dict:
        """As an OpenAI function definition (what /v1 `tools` and chat templates take)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def as_dict(self) -> dict:
        return {"name": self.name, "title": self.title or self.name, "description": self.description,
                "parameters": self.parameters, "read_only": self.read_only, "source": self.source}


@dataclass(frozen=True)
class CallContext:
    """Who a call is made for (retrieval searches that user's documents)."""

    user_id: str | None = None
    conversation_id: str | None = None


@dataclass
class ToolOutput:
    """What a source returns for one call: text for the model, and optional structured extras for
    the UI (e.g. retrieval's snippets to cite)."""

    text: str
    is_error: bool = False
    data: Any = None


@dataclass
class ToolResult:
    """One finished call, as the chat loop stores it and the model reads it."""

    name: str
    arguments: dict
    content: str  # what the model reads (truncated to the output limit)
    is_error: bool = False
    duration_ms: float = 0.0
    truncated: bool = False
    data: Any = None

    def as_dict(self) -> dict:
        return {"name": self.name, "arguments": self.arguments, "content": self.content, "is_error": self.is_error,
                "duration_ms": round(self.duration_ms, 1), "truncated": self.truncated, "data": self.data}


class ToolError(Exception):
    """A call that failed in a way the model should be told about (its message is the result)."""


class ToolSource(Protocol):
    """A provider of tools: built-ins, one MCP server, one OpenAPI plugin."""

    name: str  # "" for built-ins (no namespace), else the namespace

    async def start(self) -> None: ...

    async def list_tools(self) -> list[ToolSpec]: ...

    async def call(self, name: str, arguments: dict, context: CallContext) -> ToolOutput: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ToolLimits:
    timeout_s: float = 30.0
    max_output_chars: int = 16_000


@dataclass
class _Entry:
    spec: ToolSpec  # namespaced
    source: ToolSource
    local: str


@dataclass
class Toolbox:
    """All tools of a server or a CLI command, namespaced, called under limits."""

    sources: list[ToolSource]
    limits: ToolLimits = field(default_factory=ToolLimits)

    def __post_init__(self):
        self._tools: dict[str, _Entry] = {}
        self._failed: dict[str, str] = {}  # source -> why it could not start or list

    async def start(self) -> None:
        """Start every source, together (one that fails is logged and left out; the others still serve)."""
        async def start(source: ToolSource) -> None:
            try:
                await source.start()
            except Exception as e:  # noqa: BLE001 - a broken server must not keep the others (or the app) down
                log.warning("tool source %s did not start: %s", source.name or "builtin", e)
                self._failed[source.name] = str(e) or type(e).__name__

        await asyncio.gather(*(start(source) for source in self.sources))
        await self.refresh()

    async def refresh(self) -> None:
        tools: dict[str, _Entry] = {}
        for source in self.sources:
            if source.name in self._failed and not getattr(source, "recovers", False):
                continue
            try:
                specs = await source.list_tools()
            except Exception as e:  # noqa: BLE001 - same as start
                log.warning("tool source %s lists no tools: %s", source.name or "builtin", e)
                self._failed[source.name] = str(e) or type(e).__name__
                continue
            self._failed.pop(source.name, None)
            for spec in specs:
                name = spec.name if not source.name else f"{safe_name(source.name, 30)}{SEPARATOR}{safe_name(spec.name, 32)}"
                if name in tools:
                    log.warning("tool %s is provided twice; keeping the first", name)
                    continue
                tools[name] = _Entry(replace(spec, name=name), source, spec.name)
        self._tools = tools

    async def watch(self, every_s: float = 30.0) -> None:
        """Re-list the tools every `every_s` until cancelled: a server that came back (or changed its
        tools) is offered again without a restart."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - retried at the next tick
                log.exception("refreshing the tools failed")

    async def close(self) -> None:
        for source in self.sources:
            try:
                await source.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.exception("closing tool source %s failed", source.name or "builtin")

    def specs(self) -> list[ToolSpec]:
        return [e.spec for e in self._tools.values()]

    def spec(self, name: str) -> ToolSpec | None:
        entry = self._tools.get(name)
        return entry.spec if entry else None

    def failed(self) -> dict[str, str]:
        return dict(self._failed)

    async def call(self, name: str, arguments: dict | str, context: CallContext = CallContext()) -> ToolResult:
        """Run one call; every failure becomes an error result the model can read."""
        started = time.perf_counter()

        def result(text: str, is_error: bool, data=None, args=None) -> ToolResult:
            limit = self.limits.max_output_chars
            truncated = len(text) > limit
            if truncated:
                text = text[:limit] + f"\n[output truncated: {len(text)} characters, the limit is {limit}]"
            return ToolResult(name, args if isinstance(args, dict) else {}, text, is_error,
                              (time.perf_counter() - started) * 1000, truncated, data)

        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except (json.JSONDecodeError, RecursionError) as e:
                return result(f"error: the arguments are not JSON: {e}", True)
        entry = self._tools.get(name)
        if entry is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return result(f"error: there is no tool named {name!r} (tools: {known})", True, args=arguments)
        problem = invalid_arguments(entry.spec.parameters, arguments)
        if problem:
            return result(f"error: invalid arguments for {name}: {problem}", True, args=arguments)
        try:
            out = await asyncio.wait_for(entry.source.call(entry.local, arguments, context), self.limits.timeout_s)
        except TimeoutError:
            return result(f"error: {name} did not finish within {self.limits.timeout_s:g} s", True, args=arguments)
        except ToolError as e:
            return result(f"error: {e}", True, args=arguments)
        except Exception as e:  # noqa: BLE001 - the model is told; the chat goes on
            log.exception("tool %s failed", name)
            return result(f"error: {name} failed: {type(e).__name__}: {e}", True, args=arguments)
        return result(out.text, out.is_error, out.data, args=arguments)


def invalid_arguments(schema: dict, arguments: Any) -> str | None:
    """Why `arguments` do not satisfy `schema` (None: they do)."""
    import jsonschema

    if not isinstance(arguments, dict):
        return "the arguments must be a JSON object"
    try:
        jsonschema.validate(arguments, schema or {"type": "object"})
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        return f"{where + ': ' if where else ''}{e.message}"
    except jsonschema.SchemaError as e:
        log.warning("a tool's schema is invalid: %s", e.message)  # the tool's fault: let it decide
    return None
