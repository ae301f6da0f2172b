"""Which tools a server (or `chatloop tools`) has: the built-ins, document retrieval, and the MCP
servers and OpenAPI plugins of a tools config file.

    {"mcpServers":     {"files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/data"]},
                        "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ..."}}},
     "openapiPlugins": {"todo": {"manifest": "https://todo.example.com/.well-known/ai-plugin.json"}}}

`mcpServers` is the Claude Desktop convention (docs/mcp.md); `openapiPlugins` is ours
(docs/plugins.md). The file is passed as `--mcp-config FILE` to `chatloop serve` and `chatloop
tools`, or set as CHATLOOP_MCP_CONFIG.
"""

import json
from pathlib import Path

from chatloop.config import Settings
from chatloop.errors import UsageError
from chatloop.tools.base import ToolLimits, Toolbox, ToolSource

KNOWN_KEYS = ("mcpServers", "openapiPlugins")


def load_tools_config(path: Path) -> dict:
    """The tools config file as a dict with both sections (possibly empty); UsageError naming the
    file and the problem otherwise."""
    try:
        tree = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read the tools config {path}: {e.strerror or e}", param="mcp_config") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"the tools config {path} is not JSON: {e}", param="mcp_config") from e
    if not isinstance(tree, dict):
        raise UsageError(f"the tools config {path} must be a JSON object with \"mcpServers\" and/or "
                         "\"openapiPlugins\"", param="mcp_config")
    out = {}
    for key in KNOWN_KEYS:
        section = tree.get(key) or {}
        if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
            raise UsageError(f"the tools config {path}: \"{key}\" must map names to objects", param="mcp_config")
        out[key] = section
    return out


def config_sources(config: dict) -> list[ToolSource]:
    """The MCP servers and OpenAPI plugins a loaded config describes (not started yet)."""
    from chatloop.tools.mcp import mcp_sources
    from chatloop.tools.openapi import plugin_sources

    servers = {name: entry for name, entry in config["mcpServers"].items() if not entry.get("disabled")}
    return [*mcp_sources(servers), *plugin_sources(config["openapiPlugins"])]


def build_toolbox(settings: Settings, *, db=None, config_path: Path | None = None) -> Toolbox:
    """Every tool of a server: built-ins, retrieval over users' documents (with a database), and the
    config file's servers and plugins. Call `await toolbox.start()` before use."""
    from chatloop.tools.builtin import Builtins

    sources: list[ToolSource] = [Builtins(scratch_root=settings.home_dir / "sandbox")]
    if db is not None:
        from chatloop.tools.retrieval import Retrieval

        sources.append(Retrieval(db))
    path = config_path or settings.mcp_config
    if path is not None:
        sources += config_sources(load_tools_config(path))
    return Toolbox(sources, ToolLimits(timeout_s=settings.tool_timeout_seconds,
                                       max_output_chars=settings.tool_max_output_chars))
