"""`chatloop tools`: list the tools a server would offer, and call one from the terminal.

    chatloop tools list [--mcp-config FILE] [--json]
    chatloop tools call NAME --args JSON [--mcp-config FILE] [--json]

Both start the same toolbox `chatloop serve` builds (built-ins, and the MCP servers and OpenAPI
plugins of the config file; retrieval needs a user's documents, so it is the server's alone), then
shut the servers down. `call` prints the result text (or, with --json, the whole result) and exits
1 when the call failed: then the tool's reason goes to stderr (with --json, in the result).
"""

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from chatloop.errors import ChatloopError, UsageError

tools_app = typer.Typer(no_args_is_help=True, help="List and call tools (built-ins, MCP servers, OpenAPI plugins).")
ConfigOpt = Annotated[Path | None, typer.Option(
    "--mcp-config", help='A tools config file: {"mcpServers": {...}, "openapiPlugins": {...}} (docs/mcp.md).')]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _fail(e: ChatloopError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(e.exit_code)


async def _with_toolbox(config: Path | None, work):
    from chatloop.config import get_settings
    from chatloop.tools.config import build_toolbox

    toolbox = build_toolbox(get_settings(), config_path=config)
    await toolbox.start()
    try:
        return toolbox, await work(toolbox)
    finally:
        await toolbox.close()


@tools_app.command("list")
def list_tools(mcp_config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Every tool, namespaced as the model sees it (SERVER__tool), with its source and whether it is read-only."""
    async def work(toolbox):
        return toolbox.specs()

    try:
        toolbox, specs = asyncio.run(_with_toolbox(mcp_config, work))
    except ChatloopError as e:
        _fail(e)
    if as_json:
        print(json.dumps({"tools": [s.as_dict() for s in specs], "failed": toolbox.failed()}, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "source", "read-only", "description")
    for spec in specs:
        table.add_row(spec.name, spec.source, "yes" if spec.read_only else "no", spec.description.split("\n")[0][:80])
    console = Console()
    console.print(table)
    for source, why in toolbox.failed().items():
        console.print(f"[red]{source or 'builtin'} is down:[/red] {why}")


@tools_app.command("call")
def call_tool(
    name: Annotated[str, typer.Argument(help="The tool's name as `tools list` shows it.")],
    args: Annotated[str, typer.Option("--args", help="The arguments, a JSON object.")] = "{}",
    mcp_config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Call one tool with the same checks, timeout and output limit as in a conversation."""
    try:
        arguments = json.loads(args)
    except json.JSONDecodeError as e:
        _fail(UsageError(f"--args is not JSON: {e}"))
    if not isinstance(arguments, dict):
        _fail(UsageError("--args must be a JSON object"))

    async def work(toolbox):
        if toolbox.spec(name) is None:
            known = ", ".join(s.name for s in toolbox.specs())
            raise UsageError(f"there is no tool named {name!r} (tools: {known})")
        return await toolbox.call(name, arguments)

    try:
        _, result = asyncio.run(_with_toolbox(mcp_config, work))
    except ChatloopError as e:
        _fail(e)
    if as_json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
    elif result.is_error:  # the tool's own reason, where errors go (stdout holds results only)
        print(f"error: {name}: {result.content}", file=sys.stderr)
    else:
        print(result.content)
    if result.is_error:
        raise typer.Exit(1)
