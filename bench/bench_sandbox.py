"""Benchmark of the python-grader sandbox (SandboxPool directly, warm pool).

Prints grades/s for a trivial grader in batches of 1, 16, 256 and 1024, and p50 / p99
latency of a single grade. Targets on a 2-core machine: >= 5,000 grades/s in batches of
256 and <= 10 ms p50 for one grade. Not a test: numbers depend on the machine.

    .venv/bin/python bench/bench_sandbox.py [--mode bwrap|unjailed] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from rft_grader.sandbox import SandboxPool, SandboxSettings

TRIVIAL = "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['answer'] else 0.0\n"
NUMPY = "import numpy as np\ndef grade(sample, item):\n    return float(np.tanh(len(sample['output_text'])))\n"


async def measure(pool: SandboxPool, source: str, batch: int, seconds: float) -> tuple[float, list[float]]:
    pairs = [({"output_text": "42", "output_json": None}, {"answer": "42"})] * batch
    for _ in range(3):  # warm: workers started, grader compiled
        await pool.grade("bench", source, pairs)
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        outcomes = await pool.grade("bench", source, pairs)
        latencies.append(time.perf_counter() - t)
        assert all(o.score is not None for o in outcomes), outcomes[0]
    elapsed = time.perf_counter() - start
    return len(latencies) * batch / elapsed, latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else values[0] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="bwrap", choices=["bwrap", "unjailed"])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    settings = SandboxSettings(sandbox_mode=args.mode)
    async with SandboxPool(settings) as pool:
        if not pool.available:
            raise SystemExit(f"sandbox unavailable: {pool.unavailable_reason}")
        print(f"mode={args.mode} workers_per_tenant={settings.sandbox_workers_per_tenant}")
        print(f"{'grader':8} {'batch':>6} {'grades/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for name, source in (("trivial", TRIVIAL), ("numpy", NUMPY)):
            for batch in (1, 16, 256, 1024):
                rate, lat = await measure(pool, source, batch, args.seconds)
                print(f"{name:8} {batch:>6} {rate:>10.0f} {pct(lat, 50):>8.2f} {pct(lat, 99):>8.2f}")
        # One grade on an idle warm pool (a pause lets the worker fork its next spare child).
        pairs = [({"output_text": "42", "output_json": None}, {"answer": "42"})]
        idle = []
        for _ in range(int(args.seconds * 10)):
            await asyncio.sleep(0.1)
            t = time.perf_counter()
            await pool.grade("bench", TRIVIAL, pairs)
            idle.append(time.perf_counter() - t)
        print(f"trivial  1 on an idle warm pool: p50 {pct(idle, 50):.2f} ms, p99 {pct(idle, 99):.2f} ms")
        # Concurrent single grades (e.g. many small RPCs): both workers of the tenant busy.
        source = TRIVIAL
        pairs = [({"output_text": "42", "output_json": None}, {"answer": "42"})]
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds:
            await asyncio.gather(*(pool.grade("bench", source, pairs) for _ in range(8)))
            count += 8
        print(f"trivial  1 x 8 concurrent: {count / (time.perf_counter() - start):.0f} grades/s")


if __name__ == "__main__":
    asyncio.run(main())
