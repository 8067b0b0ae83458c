"""The agent demo's tool: an MCP server (stdio) with one tool, `add`.

The rollout service starts it from its --tool-servers-file:

    {"servers": [{"name": "calc", "kind": "mcp_stdio", "target": "python3",
                  "args": ["examples/agents/calculator_mcp.py"]}]}
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("calculator")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


if __name__ == "__main__":
    server.run("stdio")
