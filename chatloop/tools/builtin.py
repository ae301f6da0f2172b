"""The built-in tools: calculator, current_time and python (a sandboxed interpreter).

    builtins = Builtins(scratch_root=home / "scratch")           # all three
    builtins = Builtins(scratch_root=..., enabled={"calculator"})  # only some
    builtins = Builtins(scratch_root=..., extra=[BuiltinTool(spec, handler)])  # more (e.g. search)
    toolbox = Toolbox([builtins, ...])

Built-ins are a `ToolSource` whose name is "": their tools keep their own names in the toolbox.
Each is a `BuiltinTool`: its spec and an async handler taking (arguments, context).
"""

import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chatloop.tools.base import CallContext, ToolError, ToolOutput, ToolSpec
from chatloop.tools.calculator import CalculatorError, calculate
from chatloop.tools.sandbox import SandboxLimits, run_python

Handler = Callable[[dict, CallContext], Awaitable[ToolOutput]]


@dataclass(frozen=True)
class BuiltinTool:
    spec: ToolSpec
    handler: Handler


async def _calculator(arguments: dict, context: CallContext) -> ToolOutput:
    try:
        return ToolOutput(calculate(arguments["expression"]))
    except CalculatorError as e:
        raise ToolError(str(e)) from None


async def _current_time(arguments: dict, context: CallContext) -> ToolOutput:
    name = arguments.get("timezone") or "UTC"
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris or Asia/Shanghai)") from None
    now = datetime.datetime.now(zone)
    data = {"datetime": now.isoformat(timespec="seconds"), "weekday": now.strftime("%A"), "timezone": name,
            "utc_offset": now.strftime("%z")}
    return ToolOutput(f"{data['datetime']} ({data['weekday']}, {name}, UTC{now.strftime('%z')})", data=data)


CALCULATOR = ToolSpec(
    name="calculator", title="Calculator", read_only=True,
    description="Evaluate an arithmetic expression exactly, e.g. (5-2)+4 or 17.5% * 2840. Supports + - * / // % "
                "** (also × ÷ ^), parentheses, pi, e and sqrt, abs, round, floor, ceil, log, ln, log10, log2, exp, "
                "sin, cos, tan, asin, acos, atan, min, max, factorial. Use it instead of doing arithmetic in your head.",
    parameters={"type": "object", "properties": {"expression": {
        "type": "string", "description": "The expression, e.g. (1234 + 5678) / 3.5"}},
        "required": ["expression"], "additionalProperties": False},
)
CURRENT_TIME = ToolSpec(
    name="current_time", title="Current time", read_only=True,
    description="The current date, time and weekday, in UTC or an IANA time zone (e.g. Asia/Shanghai). Use it "
                "whenever the answer depends on today's date or the time.",
    parameters={"type": "object", "properties": {"timezone": {
        "type": "string", "description": "An IANA time zone name such as Europe/Paris; default UTC"}},
        "additionalProperties": False},
)
PYTHON = ToolSpec(
    name="python", title="Python", read_only=False,
    description="Run a Python 3 program and get its stdout, stderr and exit status. Print what you need to see. "
                "No network and no subprocesses; it may write files only in its own working directory, which is "
                "deleted afterwards; time and memory are limited.",
    parameters={"type": "object", "properties": {"code": {
        "type": "string", "description": "The complete program; use print() for results"}},
        "required": ["code"], "additionalProperties": False},
)


class Builtins:
    """The built-in tools as one tool source (not namespaced)."""

    name = ""

    def __init__(self, *, scratch_root: Path, sandbox_limits: SandboxLimits | None = None,
                 enabled: set[str] | None = None, extra: list[BuiltinTool] | None = None):
        self.scratch_root = Path(scratch_root)
        self.sandbox_limits = sandbox_limits or SandboxLimits()
        tools = [BuiltinTool(CALCULATOR, _calculator), BuiltinTool(CURRENT_TIME, _current_time),
                 BuiltinTool(PYTHON, self._python), *(extra or [])]
        unknown = (enabled or set()) - {t.spec.name for t in tools}
        if unknown:
            raise ValueError(f"unknown built-in tools: {', '.join(sorted(unknown))} "
                             f"(built-ins: {', '.join(t.spec.name for t in tools)})")
        self.tools = {t.spec.name: t for t in tools if enabled is None or t.spec.name in enabled}

    async def start(self) -> None:
        return None  # nothing to start: the sandbox starts a process per call

    async def list_tools(self) -> list[ToolSpec]:
        return [t.spec for t in self.tools.values()]

    async def call(self, name: str, arguments: dict, context: CallContext) -> ToolOutput:
        tool = self.tools.get(name)
        if tool is None:
            raise ToolError(f"there is no built-in tool named {name!r}")
        return await tool.handler(arguments, context)

    async def close(self) -> None:
        return None

    async def _python(self, arguments: dict, context: CallContext) -> ToolOutput:
        result = await run_python(arguments["code"], scratch_root=self.scratch_root, limits=self.sandbox_limits)
        failed = result.killed is not None or result.exit_code != 0
        return ToolOutput(result.report(), is_error=failed,
                          data={"exit_code": result.exit_code, "killed": result.killed,
                                "truncated": result.truncated, "duration_s": round(result.duration_s, 3),
                                "network_isolated": result.network_isolated})
