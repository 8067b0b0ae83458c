"""Sandbox for user Python (python graders): bubblewrap jail, rlimits, seccomp, pre-forked workers.

    from rft_grader.sandbox import SandboxPool, SandboxSettings, PythonOutcome

    async with SandboxPool(settings) as pool:
        outcomes = await pool.grade(tenant, source, [(sample, item), ...])

See docs/sandbox.md for the threat model and the layers.
"""

from rft_grader.sandbox.outcome import ERROR_KINDS, PythonOutcome, SandboxBusy, SandboxUnavailable
from rft_grader.sandbox.pool import SandboxPool
from rft_grader.sandbox.settings import SandboxSettings

__all__ = ["ERROR_KINDS", "PythonOutcome", "SandboxBusy", "SandboxPool", "SandboxSettings", "SandboxUnavailable"]
