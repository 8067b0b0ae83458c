"""Prometheus metrics of the python sandbox (process-wide, like every prometheus_client metric)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

KILLS = Counter(
    "rft_grader_sandbox_kills_total",
    "Graded processes or workers the sandbox killed or saw die, by reason "
    "(timeout, cpu, file_size, signal, tampered, watchdog, worker_died, damaged, crash_streak, wrong_answer, cancelled).",
    ["reason"],
)
WORKERS = Gauge("rft_grader_sandbox_workers", "Running sandbox workers (jails) per tenant.", ["tenant"])
WORKER_STARTS = Counter("rft_grader_sandbox_worker_starts_total", "Sandbox workers started (including restarts).")
