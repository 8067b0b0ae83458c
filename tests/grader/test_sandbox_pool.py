"""SandboxPool through its Python interface: the contract the grader service builds on."""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest
from rft_grader.sandbox import PythonOutcome, SandboxPool, SandboxSettings, SandboxUnavailable

pytestmark = pytest.mark.python_grader

FAST = {"sandbox_timeout_seconds": 2, "sandbox_cpu_seconds": 2, "sandbox_memory_bytes": 256 * 1024**2}
SOURCE = "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['answer'] else 0.0\n"


def jail_tree(pool: SandboxPool) -> set[int]:
    pids = set()
    for workers in pool.worker_pids().values():
        for pid in workers:
            pids |= {pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))}
    return pids


def test_grades_in_order_and_stops_without_leaving_a_process() -> None:
    async def run() -> set[int]:
        async with SandboxPool(SandboxSettings(**FAST)) as pool:
            assert pool.available, pool.unavailable_reason
            assert pool.describe()["mode"] == "bwrap"
            pairs = [({"output_text": str(i % 3), "output_json": None}, {"answer": "1"}) for i in range(100)]
            outcomes = await pool.grade("t1", SOURCE, pairs)
            assert outcomes == [PythonOutcome(1.0 if i % 3 == 1 else 0.0, None, "") for i in range(100)]
            pids = jail_tree(pool)
            assert len(pids) >= 6  # two jails: bubblewrap, init, zygote (+ spare children)
            return pids

    pids = asyncio.run(run())
    # Stopped inside-out: nothing left, not even a zombie. Reaping is asynchronous (a
    # loaded machine may take a moment), so wait a bounded time before judging.
    deadline = time.monotonic() + 15
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_DEAD:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, [(pid, psutil.Process(pid).status(), psutil.Process(pid).ppid()) for pid in left]


def test_without_bubblewrap_the_pool_is_unavailable_and_says_why() -> None:
    async def run() -> None:
        settings = SandboxSettings(sandbox_bwrap_path="/nonexistent/bwrap", **FAST)
        async with SandboxPool(settings) as pool:
            assert not pool.available
            assert "bubblewrap" in pool.unavailable_reason and "unjailed" in pool.unavailable_reason
            with pytest.raises(SandboxUnavailable):
                await pool.grade("t", SOURCE, [({"output_text": "1"}, {"answer": "1"})])

    asyncio.run(run())


def test_unjailed_mode_when_chosen_explicitly() -> None:
    async def run() -> None:
        settings = SandboxSettings(sandbox_mode="unjailed", sandbox_bwrap_path="/nonexistent/bwrap", **FAST)
        async with SandboxPool(settings) as pool:
            assert pool.available and pool.describe()["mode"] == "unjailed"
            (outcome,) = await pool.grade("t", SOURCE, [({"output_text": "1"}, {"answer": "1"})])
            assert outcome.score == 1.0
            spin = "import socket\ndef grade(s, i):\n    socket.socket()\n"
            (outcome,) = await pool.grade("t", spin, [({"output_text": "1"}, {})])
            assert outcome.error_kind == "exception" and "PermissionError" in outcome.message

    asyncio.run(run())


def test_outcome_rejects_non_finite_scores() -> None:
    with pytest.raises(ValueError):
        PythonOutcome(float("nan"), None, "")
    with pytest.raises(ValueError):
        PythonOutcome(None, None, "")
    with pytest.raises(ValueError):
        PythonOutcome(None, "made_up", "")
