"""A real MCP server for the episode tests, on the `mcp` SDK: tools `add` and `fail`.

    python mcp_tools.py                 (stdio: the rollout service starts it)
    python mcp_tools.py --http PORT     (streamable HTTP at http://127.0.0.1:PORT/mcp)

`add` reads the environment variable ADD_OFFSET (0 when unset) and adds it, so a test
can see that the server got the environment its tool-servers file gave it. With
START_LOG set, each start appends a line to that file; with START_DELAY_SECONDS, it
sleeps that long before serving (a server slow to start).
"""

from __future__ import annotations

import argparse
import os
import time

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
    if os.environ.get("START_LOG"):
        with open(os.environ["START_LOG"], "a") as log:
            log.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get("START_DELAY_SECONDS", "0")))
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=0, help="serve streamable HTTP on this port")
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run("stdio")
