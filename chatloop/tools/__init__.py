"""Tools: the protocol (base.py), built-in tools, the MCP host, OpenAPI plugins and the sandbox."""
