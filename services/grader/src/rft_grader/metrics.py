"""Prometheus metrics of the grader (the sandbox exports its own kill / worker metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

GRADES = Counter(
    "rft_grader_grades_total",
    "Samples graded, by grader type, tenant and outcome (ok or the error kind).",
    ["type", "tenant", "outcome"],
)
GRADE_SECONDS = Histogram(
    "rft_grader_grade_seconds",
    "Wall-clock seconds to grade one batch, by grader type.",
    ["type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
BATCH_SIZE = Histogram(
    "rft_grader_batch_size",
    "Samples per Grade call.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
)
PYTHON_TOOL_REQUESTS = Counter(
    "rft_grader_python_tool_requests_total",
    "Python tool requests, by method (describe, call), tenant and outcome (ok or the error kind).",
    ["method", "tenant", "outcome"],
)
PYTHON_TOOL_SECONDS = Histogram(
    "rft_grader_python_tool_seconds",
    "Wall-clock seconds of one Python tool request in the sandbox, by method.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
