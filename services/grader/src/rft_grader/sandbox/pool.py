"""SandboxPool: warm sandbox workers per tenant, owned by an async context manager.

    async with SandboxPool(settings) as pool:
        outcomes = await pool.grade("acme", source, [(sample, item), ...])
        tools = await pool.run_tool("acme", tools_source, "describe")
        result = await pool.run_tool("acme", tools_source, "call", "lookup", {"sku": "A1"})

Each tenant gets `sandbox_workers_per_tenant` workers, each a separate jail (own
namespaces, own tmpfs /tmp): tenants share nothing, and a batch of one tenant never
waits behind another tenant's. Workers start on a tenant's first python grade; idle
tenants are stopped. At most `sandbox_max_tenants` tenants have workers, counting those
still stopping: a new tenant beyond that takes the slot of the least recently used idle
tenant, or waits in line (at most `sandbox_tenant_wait_seconds`) for one to go idle,
after which its samples fail with resource_limit. A large batch is split across the
tenant's workers. A worker that fails (dies, stops answering, breaks the protocol) is
killed, restarted, and the batch retried once.

Python tools (`run_tool`) run in the same workers, under the same jail and limits, as
a batch of one: the tenant's workers serve its grades and its tool calls alike, except
that tool calls hold at most `sandbox_workers_per_tenant - 1` of them at once (all of
one when there is only one): tools that run until their timeout cannot shut the
tenant's grades out. A tool call has a deadline (its caller's): its wall-clock limit is
what is left of it once it has a worker, and a call whose deadline passed while it
waited is answered as a timeout without running.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from rft_common.tenancy import tenant_label

from rft_grader.sandbox import metrics
from rft_grader.sandbox.outcome import PythonOutcome, SandboxBusy, SandboxUnavailable
from rft_grader.sandbox.runtime import Runtime, find_bwrap
from rft_grader.sandbox.settings import SandboxSettings
from rft_grader.sandbox.worker import SandboxWorker, WorkerFailed, encode_request

log = logging.getLogger(__name__)

CRASH_STREAK = 5
"""A worker whose last this many batches crashed in every sample is replaced."""
SELF_TEST_TENANT = "default"
SELF_TEST_SOURCE = "def grade(sample, item):\n    return float(len(sample['output_text']))\n"
MIN_CHUNK = 32
MIN_RUN_SECONDS = 0.05
"""A tool call with less than this left of its deadline when it gets a worker is not run."""


@dataclasses.dataclass
class _Tenant:
    name: str
    workers: list[SandboxWorker]
    idle: asyncio.Queue
    tool_slots: asyncio.Semaphore
    """Workers tool calls may hold at once: one fewer than the tenant has (at least one)."""
    busy: int = 0
    last_used: float = dataclasses.field(default_factory=time.monotonic)


class SandboxPool:
    """Runs python graders for tenants in jailed, pre-forked workers."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.mode = settings.sandbox_mode
        self.available = False
        self.unavailable_reason = "sandbox pool not started"
        self._bwrap: str | None = None
        self._runtime: Runtime | None = None
        self._stage: str | None = None
        self._tenants: dict[str, _Tenant] = {}
        self._closing = 0
        """Tenants whose workers are stopping: they still hold their slot."""
        self._waiting: collections.deque[object] = collections.deque()
        """New tenants waiting for a slot, first come first served (one ticket per grade call)."""
        self._changed = asyncio.Event()
        """Set (and replaced) when a slot may have freed up: a tenant went idle or finished stopping."""
        self._reaper: asyncio.Task | None = None
        self._settling: set[asyncio.Task] = set()
        self._closers: set[asyncio.Task] = set()

    # -- lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> SandboxPool:
        try:
            await self._start()
        except Exception:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        settings = self.settings
        if self.mode == "bwrap":
            self._bwrap = find_bwrap(settings)
            if self._bwrap is None:
                self._disable(
                    f"bubblewrap not found ({settings.sandbox_bwrap_path!r}): python graders are disabled. "
                    "Install bubblewrap, or start with --sandbox-mode unjailed to accept a weaker sandbox "
                    "(rlimits, seccomp and uid drop, without filesystem or network isolation)."
                )
                return
        try:
            self._runtime = await asyncio.to_thread(Runtime.discover, settings)
        except Exception as exc:
            self._disable(f"sandbox runtime unavailable: {exc}")
            return
        if self._runtime.missing_packages:
            log.warning("sandbox packages not installed", extra={"missing": ",".join(self._runtime.missing_packages)})
        if self.mode == "bwrap" and os.geteuid() == 0:
            self._stage = tempfile.mkdtemp(prefix="rft-sandbox-stage-")
            os.chmod(self._stage, 0o755)
        if self.mode == "unjailed":
            log.warning(
                "SANDBOX IN WEAKER MODE (unjailed): python graders run with rlimits, seccomp and an unprivileged "
                "uid but WITHOUT bubblewrap: they can read world-readable host files and share the host's /tmp."
            )
        self.available = True
        self.unavailable_reason = ""
        try:  # prove the sandbox works end to end, and warm the default tenant
            outcomes = await self.grade(SELF_TEST_TENANT, SELF_TEST_SOURCE, [({"output_text": "abc"}, {})])
        except Exception as exc:
            self._disable(f"sandbox self-test failed: {exc}")
            return
        if outcomes[0].score != 3.0:
            self._disable(f"sandbox self-test failed: {outcomes[0].error_kind}: {outcomes[0].message}")
            return
        self._reaper = asyncio.create_task(self._reap_idle())
        log.info("python sandbox ready", extra=self.describe())

    def _disable(self, reason: str) -> None:
        self.available = False
        self.unavailable_reason = reason
        log.error("PYTHON GRADERS DISABLED: %s", reason)

    async def __aexit__(self, *exc: object) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for task in list(self._settling):
            task.cancel()
        await asyncio.gather(*self._settling, return_exceptions=True)
        await asyncio.gather(*self._closers, return_exceptions=True)
        for name in list(self._tenants):
            await self._close_tenant(name)
        if self._stage is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._stage)
            self._stage = None
        self.available = False
        self.unavailable_reason = "sandbox pool stopped"

    # -- public ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Mode, limits and warm workers, for start-up logs and health details."""
        s = self.settings
        runtime = self._runtime
        return {
            "mode": self.mode,
            "available": self.available,
            "unavailable_reason": self.unavailable_reason,
            "bwrap": self._bwrap or "",
            "python": runtime.python if runtime else "",
            "packages": list(runtime.packages) if runtime else [],
            "missing_packages": list(runtime.missing_packages) if runtime else [],
            "workers_per_tenant": s.sandbox_workers_per_tenant,
            "max_tenants": s.sandbox_max_tenants,
            "tenants_waiting": len(self._waiting),
            "tenants": {name: sum(w.alive for w in t.workers) for name, t in self._tenants.items()},
            "limits": {
                "memory_bytes": s.sandbox_memory_bytes,
                "timeout_seconds": s.sandbox_timeout_seconds,
                "cpu_seconds": s.sandbox_cpu_seconds,
                "tmp_bytes": s.sandbox_tmp_bytes,
                "open_files": s.sandbox_open_files,
                "processes": s.sandbox_processes,
                "max_output_bytes": s.sandbox_max_output_bytes,
            },
        }

    def worker_pids(self) -> dict[str, list[int]]:
        """Host pids of the running workers (launcher / bubblewrap, or the zygote), by tenant."""
        return {name: [w.pid for w in t.workers if w.alive and w.pid] for name, t in self._tenants.items()}

    async def grade(self, tenant: str, source: str, pairs: list[tuple[dict, dict]]) -> list[PythonOutcome]:
        """One outcome per (sample, item) pair, in order. Raises SandboxUnavailable when disabled,
        SandboxBusy when no tenant slot freed up within the wait."""
        if not self.available:
            raise SandboxUnavailable(self.unavailable_reason)
        if not pairs:
            return []
        async with self._admitted(tenant) as group:
            parts = min(len(group.workers), max(1, len(pairs) // MIN_CHUNK))
            size = math.ceil(len(pairs) / parts)
            chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
            results = await asyncio.gather(*(self._run_chunk(group, source, chunk) for chunk in chunks))
        return [outcome for chunk in results for outcome in chunk]

    async def run_tool(
        self,
        tenant: str,
        source: str,
        mode: Literal["call", "describe"],
        name: str = "",
        arguments: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> PythonOutcome:
        """Python tools in the tenant's workers. "describe": the source's tools as a JSON
        list in the outcome's message; "call": the result of tool `name` as text. A failure
        of the user's code is an error outcome, as for a grade. `deadline` (time.monotonic())
        bounds the wait for a worker and the run: the wall-clock limit is what is left of it
        once the call has a worker; a call that gets none in time is a timeout outcome and
        does not run. Raises as `grade` does."""
        if not self.available:
            raise SandboxUnavailable(self.unavailable_reason)
        entry = (name, arguments if arguments is not None else {}) if mode == "call" else (None, None)
        async with self._admitted(tenant) as group:
            if not await _acquire(group.tool_slots, deadline):
                return _late()
            # The slot is given back with the worker, once it has settled (a worker still
            # draining a cancelled call's answer counts against the tools' share).
            (outcome,) = await self._run_chunk(group, source, [entry], mode, deadline, group.tool_slots.release)
        return outcome

    # -- internals ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _admitted(self, tenant: str) -> AsyncIterator[_Tenant]:
        """The tenant's group, busy for the block (SandboxBusy if no slot freed up in time)."""
        group = await self._admit(tenant)
        if group is None:
            s = self.settings
            raise SandboxBusy(
                f"the python sandbox is at --sandbox-max-tenants ({s.sandbox_max_tenants}) with every tenant busy, "
                f"and no slot freed up within {s.sandbox_tenant_wait_seconds:g} s: retry later"
            )
        try:
            yield group
        finally:
            group.busy -= 1
            group.last_used = time.monotonic()
            if group.busy == 0:
                self._notify()

    async def _admit(self, name: str) -> _Tenant | None:
        """The tenant's group, marked busy; None if no slot freed up in time.

        A tenant with workers goes straight in. A new one queues; at the head of the queue
        it takes a free slot, or stops the least recently used idle tenant and takes its
        slot once its workers are gone, or waits for a change. The jails never exceed
        sandbox_max_tenants x sandbox_workers_per_tenant, stopping ones included.
        """
        group = self._tenants.get(name)
        if group is None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.sandbox_tenant_wait_seconds
            ticket = object()
            self._waiting.append(ticket)
            try:
                while (group := self._tenants.get(name)) is None:
                    if self._waiting[0] is ticket:
                        if len(self._tenants) + self._closing < self.settings.sandbox_max_tenants:
                            group = self._new_tenant(name)
                            break
                        idle = [t for t in self._tenants.values() if t.busy == 0]
                        if idle:
                            await self._close_tenant(min(idle, key=lambda t: t.last_used).name)
                            continue
                    left = deadline - loop.time()
                    if left <= 0:
                        log.warning("sandbox tenant slots all busy", extra={"tenant": name})
                        return None
                    changed = self._changed
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(changed.wait(), left)
            finally:
                self._waiting.remove(ticket)
                self._notify()
        group.busy += 1
        group.last_used = time.monotonic()
        return group

    def _notify(self) -> None:
        """Wake the tenants waiting for a slot: something changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _new_tenant(self, name: str) -> _Tenant:
        n = self.settings.sandbox_workers_per_tenant
        workers = [
            SandboxWorker(self.settings, self._runtime, self.mode, self._bwrap, self._stage, f"{name}/{i}")
            for i in range(n)
        ]
        group = _Tenant(name, workers, asyncio.Queue(), asyncio.Semaphore(max(1, n - 1)))
        for worker in workers:
            group.idle.put_nowait(worker)
        self._tenants[name] = group
        return group

    async def _close_tenant(self, name: str) -> None:
        """Stop a tenant's workers. The tenant is gone at once (no grade can start on it);
        its slot stays taken until its jails are, and a cancelled caller does not cut the
        stop short."""
        group = self._tenants.pop(name, None)
        if group is None:
            return
        self._closing += 1
        task = asyncio.create_task(self._stop_workers(group))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)
        await asyncio.shield(task)

    async def _stop_workers(self, group: _Tenant) -> None:
        try:
            await asyncio.gather(*(w.stop() for w in group.workers), return_exceptions=True)
        finally:
            self._closing -= 1
            if group.name not in self._tenants:  # (it may be back already, with new workers)
                with contextlib.suppress(KeyError):
                    metrics.WORKERS.remove(tenant_label(group.name))
            self._notify()

    async def _reap_idle(self) -> None:
        period = min(self.settings.sandbox_idle_seconds / 2, 30.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for name, group in list(self._tenants.items()):
                if group.busy == 0 and now - group.last_used > self.settings.sandbox_idle_seconds:
                    log.info("stopping idle sandbox workers", extra={"tenant": name})
                    await self._close_tenant(name)

    def _update_gauge(self, group: _Tenant) -> None:
        if self._tenants.get(group.name) is group:
            metrics.WORKERS.labels(tenant_label(group.name)).set(sum(w.alive for w in group.workers))

    async def _run_chunk(
        self,
        group: _Tenant,
        source: str,
        pairs: list[tuple[Any, Any]],
        mode: str = "grade",
        deadline: float | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> list[PythonOutcome]:
        """Run `pairs` on one of the group's workers. `on_release` is called once, however
        this ends (cancelled too): when the worker is back in the idle queue, or at once if
        the chunk never got one."""
        handed = False
        try:
            try:
                body = await encode_request(source, pairs, mode)
            except (TypeError, ValueError, RecursionError) as exc:
                message = f"sample or item is not JSON data: {exc}"[:500]
                return [PythonOutcome.error("exception", message) for _ in pairs]
            worker = await _take(group.idle, deadline)
            if worker is None:
                return [_late() for _ in pairs]
            handed = True
            return await self._run_on(group, worker, source, pairs, body, deadline, on_release)
        finally:
            if on_release is not None and not handed:
                on_release()

    async def _run_on(
        self,
        group: _Tenant,
        worker: SandboxWorker,
        source: str,
        pairs: list[tuple[Any, Any]],
        body: bytes,
        deadline: float | None,
        on_release: Callable[[], None] | None,
    ) -> list[PythonOutcome]:
        try:
            for attempt in (1, 2):
                try:
                    if not worker.alive:
                        await worker.start()
                        self._update_gauge(group)
                    timeout = None
                    if deadline is not None:  # what is left now that the call has a (started) worker
                        timeout = deadline - time.monotonic()
                        if timeout < MIN_RUN_SECONDS:
                            return [_late() for _ in pairs]
                    outcomes = await worker.grade(source, pairs, body, timeout)
                    self._count_crashes(worker, outcomes)
                    return outcomes
                except WorkerFailed as exc:
                    # Graded code cannot reach the zygote (seccomp, no ptrace, non-dumpable); a dead
                    # or damaged worker means the host killed it (e.g. OOM) or it broke: retry
                    # once on a fresh one.
                    metrics.KILLS.labels(exc.reason).inc()
                    self._update_gauge(group)
                    log.warning("sandbox worker failed", extra={"worker": worker.name, "error": str(exc)[:500]})
                    if attempt == 2:
                        return [PythonOutcome.error("crashed", f"sandbox worker failed: {exc}"[:2000]) for _ in pairs]
            raise AssertionError("unreachable")
        finally:
            task = asyncio.create_task(self._release(group, worker, on_release))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    @staticmethod
    def _count_crashes(worker: SandboxWorker, outcomes: list[PythonOutcome]) -> None:
        """The safety net behind the zygote's own checks: a worker that only crashes for
        CRASH_STREAK batches in a row is replaced (a grader that always crashes costs its
        tenant a restart now and then; a worker broken in a way nobody foresaw recovers)."""
        if outcomes and all(o.error_kind == "crashed" for o in outcomes):
            worker.crash_streak += 1
        else:
            worker.crash_streak = 0
        if worker.crash_streak >= CRASH_STREAK:
            log.warning(
                "replacing a sandbox worker whose last %d batches all crashed",
                worker.crash_streak,
                extra={"worker": worker.name},
            )
            metrics.KILLS.labels("crash_streak").inc()
            worker.replace = True

    async def _release(
        self, group: _Tenant, worker: SandboxWorker, on_release: Callable[[], None] | None = None
    ) -> None:
        """Return a worker once its /tmp is empty again (and the answer of a request given
        up after it was written is drained); restart it if that failed."""
        try:
            if worker.replace:
                await worker.stop()  # started afresh on its next batch
            elif worker.alive and not await worker.settle():
                if worker.owes_answer:  # still busy with a request given up: no use waiting for it
                    log.info("restarting sandbox worker busy with a cancelled request", extra={"worker": worker.name})
                    metrics.KILLS.labels("cancelled").inc()
                    await worker.stop(graceful=False)
                else:
                    log.info("restarting sandbox worker whose /tmp could not be emptied", extra={"worker": worker.name})
                    await worker.stop()
        finally:
            self._update_gauge(group)
            group.idle.put_nowait(worker)
            if on_release is not None:
                on_release()


def _late() -> PythonOutcome:
    return PythonOutcome.error(
        "timeout", "tool call not run: its deadline passed while it waited for one of the tenant's sandbox workers"
    )


async def _acquire(slots: asyncio.Semaphore, deadline: float | None) -> bool:
    """Take one of `slots`, waiting at most until `deadline` (time.monotonic(); None: no bound)."""
    if deadline is None or not slots.locked():
        return await slots.acquire()  # (at once when one is free)
    try:
        return await asyncio.wait_for(slots.acquire(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        return False


async def _take(idle: asyncio.Queue, deadline: float | None) -> SandboxWorker | None:
    """An idle worker, waiting at most until `deadline`; None when none came in time."""
    if deadline is None:
        return await idle.get()
    if not idle.empty():
        return idle.get_nowait()
    try:
        return await asyncio.wait_for(idle.get(), max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        return None
