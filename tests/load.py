"""Concurrent load against a live service: fire N calls at once over one asyncio channel,
record each call's latency and status, and summarise (p50 / p99 / max, errors)."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable

import grpc


@dataclasses.dataclass
class LoadReport:
    calls: int
    seconds: float
    latencies: list[float]
    errors: list[str]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def summary(self, what: str) -> str:
        return (
            f"{what}: {self.calls} concurrent calls in {self.seconds:.2f} s, {len(self.errors)} errors;"
            f" latency p50 {self.percentile(0.5) * 1000:.0f} ms, p99 {self.percentile(0.99) * 1000:.0f} ms,"
            f" max {max(self.latencies, default=float('nan')) * 1000:.0f} ms,"
            f" mean {statistics.fmean(self.latencies) * 1000 if self.latencies else float('nan'):.0f} ms"
        )


async def fire(calls: int, one: Callable[[int], Awaitable[None]]) -> LoadReport:
    """Start `calls` calls of `one(index)` at once; each must raise nothing."""
    latencies: list[float] = []
    errors: list[str] = []

    async def timed(index: int) -> None:
        started = time.perf_counter()
        try:
            await one(index)
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{exc.code().name}: {exc.details()}")
        except Exception as exc:  # noqa: BLE001 - a failed check is an error of the run
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(calls)))
    return LoadReport(calls, time.perf_counter() - started, latencies, errors)
