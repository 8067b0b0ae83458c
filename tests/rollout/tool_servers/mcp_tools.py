"""A real MCP server for the episode tests, on the `mcp` SDK: tools `add` and `fail`.

    python mcp_tools.py                 (stdio: the rollout service starts it)
    python mcp_tools.py --http PORT     (streamable HTTP at http://127.0.0.1:PORT/mcp)

`add` reads the environment variable ADD_OFFSET (0 when unset) and adds it, so a test
can see that the server got the environment its tool-servers file gave it.
"""

from __future__ import annotations

import argparse
import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("rft-test-tools")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b + int(os.environ.get("ADD_OFFSET", "0")))


@server.tool()
def fail(reason: str = "") -> str:
    """Always fails."""
    raise RuntimeError(f"fail was called {reason}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=0, help="serve streamable HTTP on this port")
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run("stdio")
