"""SandboxPool through its Python interface: the contract the grader service builds on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import psutil
import pytest
from prometheus_client import REGISTRY
from rft_grader.sandbox import PythonOutcome, SandboxBusy, SandboxPool, SandboxSettings, SandboxUnavailable
from rft_grader.sandbox import pool as pool_module

pytestmark = pytest.mark.python_grader

FAST = {"sandbox_timeout_seconds": 2, "sandbox_cpu_seconds": 2, "sandbox_memory_bytes": 256 * 1024**2}
SOURCE = "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['answer'] else 0.0\n"
RIGHT = [({"output_text": "1"}, {"answer": "1"})]


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


def kills(reason: str) -> float:
    return REGISTRY.get_sample_value("rft_grader_sandbox_kills_total", {"reason": reason}) or 0.0


async def gone(pid: int, seconds: float = 15) -> bool:
    """Whether `pid` exits within a (generous) bound; the pool stops workers in the background."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        await asyncio.sleep(0.05)
    return False


def unconfined(pid: int) -> bool:
    """No CPU limit yet: a spare child waiting for its batch (not the last batch's child, dying)."""
    try:
        with open(f"/proc/{pid}/limits") as limits:
            cpu = next(line for line in limits if line.startswith("Max cpu time"))
        return cpu.split()[3:5] == ["unlimited", "unlimited"]
    except (OSError, StopIteration):
        return False


async def settled_tree(jail: int) -> list[int]:
    """zygote, fork server and spare child of a jail, once the spare of the next batch is there."""
    deadline = time.monotonic() + 15
    tree: list = []
    while time.monotonic() < deadline:
        try:
            tree = psutil.Process(jail).children(recursive=True)
            if len(tree) == 3 and all(p.status() != psutil.STATUS_ZOMBIE for p in tree) and unconfined(tree[-1].pid):
                return [p.pid for p in tree]
        except (psutil.Error, OSError):
            pass  # a process of the tree ended while we looked (the last batch's child): look again
        await asyncio.sleep(0.05)
    raise AssertionError(f"jail {jail} did not settle: {tree}")


def lower_limits(pids: list[int]) -> None:
    """What graded code did to its parent: prlimit, as the sandbox uid (root here may lack
    CAP_SYS_RESOURCE, and the uid is what the kernel checks)."""
    script = (
        "import os, resource, sys\n"
        "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n"
        "for pid in sys.argv[1:]:\n"
        "    resource.prlimit(int(pid), resource.RLIMIT_NOFILE, (20, 20))\n"
    )
    subprocess.run([sys.executable, "-I", "-c", script, *map(str, pids)], check=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="damages a jail from outside as the sandbox uid, which needs root")
def test_a_damaged_worker_is_replaced_and_the_batch_retried() -> None:
    """Issue #13, item 3: when something lowered the worker's limits (graded code did, with
    prlimit on its parent), every later grade crashed and the server never noticed."""

    async def run() -> None:
        settings = SandboxSettings(sandbox_workers_per_tenant=1, **FAST)
        async with SandboxPool(settings) as pool:
            assert (await pool.grade("t", SOURCE, RIGHT))[0].score == 1.0
            (jail,) = pool.worker_pids()["t"]
            lower_limits(await settled_tree(jail))
            before = kills("damaged")
            outcomes = await pool.grade("t", SOURCE, RIGHT * 3)
            assert outcomes == [PythonOutcome(1.0, None, "")] * 3
            assert kills("damaged") == before + 1
            assert await gone(jail)
            assert (await pool.grade("t", SOURCE, RIGHT))[0].score == 1.0

    asyncio.run(run())


def test_a_worker_whose_grades_all_crash_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net behind it: CRASH_STREAK batches in a row in which every sample crashed
    replace the worker (a metric and a log say so); the grades themselves stand."""
    monkeypatch.setattr(pool_module, "CRASH_STREAK", 3)
    crash = "import os\ndef grade(sample, item):\n    os._exit(3)\n"

    async def run() -> None:
        settings = SandboxSettings(sandbox_workers_per_tenant=1, **FAST)
        async with SandboxPool(settings) as pool:
            assert (await pool.grade("t", SOURCE, RIGHT))[0].score == 1.0
            (jail,) = pool.worker_pids()["t"]
            before = kills("crash_streak")
            for _ in range(2):
                assert [o.error_kind for o in await pool.grade("t", crash, RIGHT * 2)] == ["crashed"] * 2
            assert (await pool.grade("t", SOURCE, RIGHT))[0].score == 1.0  # a good batch ends the streak
            for _ in range(3):
                assert [o.error_kind for o in await pool.grade("t", crash, RIGHT * 2)] == ["crashed"] * 2
            assert await gone(jail)
            assert kills("crash_streak") == before + 1
            assert (await pool.grade("t", SOURCE, RIGHT))[0].score == 1.0
            assert pool.worker_pids()["t"] != [jail]

    asyncio.run(run())


def test_a_new_tenant_waits_for_a_slot_then_gives_up_with_a_clear_error() -> None:
    """Issue #13, item 7: --sandbox-max-tenants is a bound. Beyond it, a new tenant waits
    (at most --sandbox-tenant-wait-seconds) for a busy tenant to go idle; then the call is
    refused as busy (RESOURCE_EXHAUSTED at the service, which the learner retries), and it
    is served once a slot is free."""
    slow = "import time\ndef grade(sample, item):\n    time.sleep(1.5)\n    return 0.5\n"

    async def run() -> None:
        settings = SandboxSettings(  # a roomy per-sample limit: the slow grade must not time out under load
            sandbox_workers_per_tenant=1,
            sandbox_max_tenants=1,
            sandbox_tenant_wait_seconds=0.5,
            **{**FAST, "sandbox_timeout_seconds": 20.0},
        )
        async with SandboxPool(settings) as pool:
            busy = asyncio.create_task(pool.grade("a", slow, RIGHT * 4))
            deadline = time.monotonic() + 30
            while "a" not in pool.worker_pids() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert "a" in pool.worker_pids()
            with pytest.raises(SandboxBusy, match="--sandbox-max-tenants"):
                await pool.grade("b", SOURCE, RIGHT * 2)
            assert not busy.done(), "the busy tenant should still be grading"
            assert [o.score for o in await busy] == [0.5] * 4
            assert (await pool.grade("b", SOURCE, RIGHT))[0].score == 1.0  # "a" is idle now: it makes room
            assert list(pool.worker_pids()) == ["b"]

    asyncio.run(run())
