"""An MCP server for the MCP host's tests, written with the official SDK (mcp 2.x `MCPServer`).

    python tests/mcp_servers/echo_server.py                   # over stdio
    python tests/mcp_servers/echo_server.py --http PORT       # streamable HTTP at http://127.0.0.1:PORT/mcp

Its tools cover what the host must handle: plain results, a slow call (timeouts, cancellation), a
tool that raises (an error result), a big output (truncation), non-text content, a read-only
annotation, and what the process sees of its own environment and id (env handling, restarts).
"""

import argparse
import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp.types import ToolAnnotations

server = MCPServer("echo")

# 1x1 transparent PNG
PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478"
                      "9c6360000002000001e221bc330000000049454e44ae426082")


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Return the text unchanged.")
def echo(text: str) -> str:
    return text


@server.tool(description="Sleep for some seconds, then say so.")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds:g} s"


@server.tool(description="Always fails with the given message.")
def fail(message: str) -> str:
    raise ToolError(message)  # the SDK hides other exceptions' messages ("Error executing tool fail")


@server.tool(description="Return `chars` characters of text.")
def big(chars: int) -> str:
    return "x" * chars


@server.tool(description="Return a one-pixel PNG image and a caption.")
def pixel() -> list:
    return ["a pixel", Image(data=PIXEL, format="png")]


@server.tool(title="Process id", description="The server's process id.",
             annotations=ToolAnnotations(read_only_hint=True))
def pid() -> int:
    return os.getpid()


@server.tool(description="The value of an environment variable in the server's process, or '<unset>'.")
def env(name: str) -> str:
    return os.environ.get(name, "<unset>")


@server.tool(description="The value of an HTTP header of this request, or '<unset>' (streamable HTTP only).")
def header(name: str, ctx: Context) -> str:
    request = ctx.request_context.request
    return request.headers.get(name, "<unset>") if request is not None else "<not HTTP>"


@server.tool(description="Write a line to the server's stderr.")
def shout(text: str) -> str:
    print(text, file=sys.stderr, flush=True)
    return "written"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT")
    args = parser.parse_args()
    if args.http:
        server.settings.log_level = "WARNING"
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run()


if __name__ == "__main__":
    main()
