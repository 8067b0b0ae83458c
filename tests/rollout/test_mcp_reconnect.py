"""An MCP stdio server that dies comes back once, however slow it is to start: a real
ToolBox over the real MCP SDK and a real server process (tool_servers/mcp_tools.py), no
vLLM. The end-to-end side (killed under a running rollout, back on /metrics) is in
test_episodes.py."""

from __future__ import annotations

import asyncio
import pathlib
import sys

import psutil
from rft_rollout.tool_servers import ToolServerConfig, open_tool_box

SERVERS = pathlib.Path(__file__).resolve().parent / "tool_servers"


def test_a_slow_starting_server_that_died_is_restarted_once_not_per_call(tmp_path) -> None:
    """Calls time out after 1 s; the server needs 2 s to start. After a kill: the first
    call fails (transport) and marks the session down; after reconnect_seconds, calls wait
    on one reopening (they time out, it goes on), and once it is up a call gets its
    answer. The server was started twice in all: once at start-up, once after the kill."""
    starts = tmp_path / "starts"
    config = ToolServerConfig(
        name="slow",
        kind="mcp_stdio",
        target=sys.executable,
        args=[str(SERVERS / "mcp_tools.py")],
        env={"START_LOG": str(starts), "START_DELAY_SECONDS": "2"},
        timeout_seconds=1,
        reconnect_seconds=0.2,
        connect_timeout_seconds=30,
    )

    def servers() -> list[psutil.Process]:
        children = psutil.Process().children(recursive=True)
        return [c for c in children if any("mcp_tools.py" in part for part in c.cmdline())]

    async def run() -> list:
        outcomes = []
        async with open_tool_box([config]) as box:

            async def add():
                return await box.call(["slow"], "add", {"a": 1, "b": 2}, "episode")

            outcomes.append(await add())
            (first,) = servers()
            first.kill()
            first.wait(timeout=10)
            outcomes.append(await add())  # the session is gone
            await asyncio.sleep(0.3)
            outcomes.append(await add())  # starts the reopening, times out waiting for it
            outcomes.append(await add())  # waits on the same reopening
            await asyncio.sleep(3)
            outcomes.append(await add())  # back
            (second,) = servers()
            assert second.pid != first.pid
        return outcomes

    outcomes = asyncio.run(run())
    assert [(o.output, o.is_error) for o in outcomes[:1] + outcomes[-1:]] == [("3", False), ("3", False)]
    assert outcomes[1].is_error and outcomes[1].output.startswith("error: tool 'add' unavailable (")
    assert all(o.is_error and "timed out" in o.output for o in outcomes[2:4]), outcomes
    assert len(starts.read_text().split()) == 2  # not one start per call


def test_a_tool_error_answer_does_not_restart_the_server(tmp_path) -> None:
    """`fail` raises inside the server: an error for the model, and the session (and the
    server process) stays."""
    starts = tmp_path / "starts"
    config = ToolServerConfig(
        name="mcp",
        kind="mcp_stdio",
        target=sys.executable,
        args=[str(SERVERS / "mcp_tools.py")],
        env={"START_LOG": str(starts)},
        reconnect_seconds=0.1,
    )

    async def run() -> list:
        async with open_tool_box([config]) as box:
            failed = await box.call(["mcp"], "fail", {"reason": "now"}, "episode")
            unknown = await box.call(["mcp"], "add", {"a": "x"}, "episode")  # bad arguments: the server refuses
            await asyncio.sleep(0.3)
            fine = await box.call(["mcp"], "add", {"a": 1, "b": 2}, "episode")
            return [failed, unknown, fine]

    failed, unknown, fine = asyncio.run(run())
    assert failed.is_error and unknown.is_error
    assert (fine.output, fine.is_error) == ("3", False)
    assert len(starts.read_text().split()) == 1
