"""The built-in tools through the toolbox, as the chat loop calls them."""

import datetime

import pytest

from chatloop.tools.base import CallContext, ToolOutput, ToolSpec, Toolbox
from chatloop.tools.builtin import Builtins, BuiltinTool
from chatloop.tools.sandbox import SandboxLimits
from conftest import run_async

LIMITS = SandboxLimits(cpu_s=2, wall_s=4, memory_mb=256)


def call_all(toolbox: Toolbox, calls: list[tuple[str, dict]]):
    async def go():
        await toolbox.start()
        try:
            return toolbox.specs(), [await toolbox.call(name, args, CallContext(user_id="u1")) for name, args in calls]
        finally:
            await toolbox.close()

    return run_async(go())


def test_each_builtin_tool_through_the_toolbox(tmp_path):
    specs, results = call_all(Toolbox([Builtins(scratch_root=tmp_path, sandbox_limits=LIMITS)]), [
        ("calculator", {"expression": "5-2+4"}),
        ("calculator", {"expression": "（1234+5678）÷3.5"}),
        ("calculator", {"expression": "1/0"}),
        ("current_time", {}),
        ("current_time", {"timezone": "Asia/Shanghai"}),
        ("current_time", {"timezone": "Mars/Olympus"}),
        ("python", {"code": "print(sum(range(101)))"}),
        ("python", {"code": "import socket; socket.socket()"}),
        ("python", {"source": "print(1)"}),
    ])
    assert {s.name: s.read_only for s in specs} == {"calculator": True, "current_time": True, "python": False}
    calc, chinese, zero, utc, shanghai, mars, python, blocked, wrong = results
    assert (calc.content, calc.is_error) == ("7", False)
    assert chinese.content == "1974.85714286"
    assert zero.is_error and zero.content == "error: division by zero"
    now = datetime.datetime.now(datetime.UTC)
    assert abs(datetime.datetime.fromisoformat(utc.data["datetime"]) - now).total_seconds() < 60
    assert utc.data["timezone"] == "UTC" and utc.data["weekday"] in utc.content
    assert shanghai.data["utc_offset"] == "+0800" and shanghai.content.startswith(
        datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).strftime("%Y-%m-%d"))
    assert mars.is_error and "unknown time zone 'Mars/Olympus'" in mars.content
    assert not python.is_error and python.content == "exit status 0\nstdout:\n5050\n"
    assert python.data["exit_code"] == 0
    assert blocked.is_error and "sandbox: socket.__new__ is not allowed" in blocked.content
    assert wrong.is_error and "invalid arguments for python" in wrong.content
    assert list(tmp_path.iterdir()) == []


def test_enabled_picks_tools_and_extra_adds_one(tmp_path):
    async def echo(arguments: dict, context: CallContext) -> ToolOutput:
        return ToolOutput(f"{context.user_id}: {arguments['text']}")

    spec = ToolSpec("echo", "Repeat the text", {"type": "object", "properties": {"text": {"type": "string"}},
                                                  "required": ["text"]}, read_only=True)
    builtins = Builtins(scratch_root=tmp_path, enabled={"calculator", "echo"}, extra=[BuiltinTool(spec, echo)])
    specs, (echoed, missing) = call_all(Toolbox([builtins]), [("echo", {"text": "hi"}), ("python", {"code": "1"})])
    assert [s.name for s in specs] == ["calculator", "echo"]
    assert echoed.content == "u1: hi"
    assert missing.is_error and "there is no tool named 'python'" in missing.content
    with pytest.raises(ValueError, match="unknown built-in tools: shell"):
        Builtins(scratch_root=tmp_path, enabled={"shell"})
