"""Every knob of the python-grader sandbox, as flags / RFT_GRADER_SANDBOX_* variables."""

from __future__ import annotations

from typing import Literal

import pydantic
from rft_common.config import Config

GIB = 1024**3


class SandboxSettings(Config):
    """Sandbox for user Python (python graders). Defaults follow OpenAI's python grader limits."""

    sandbox_mode: Literal["bwrap", "unjailed"] = "bwrap"
    """'bwrap': a bubblewrap jail per tenant worker (no network, read-only system, private /tmp) plus rlimits,
    seccomp and an unprivileged uid. 'unjailed' is an explicit weaker mode for hosts without bubblewrap:
    rlimits, seccomp and the uid drop only, no filesystem or network isolation. Without bubblewrap and
    without choosing 'unjailed', python graders are refused."""
    sandbox_bwrap_path: str = "bwrap"
    """bubblewrap executable (a name looked up on PATH, or a path)."""
    sandbox_python: str = ""
    """Python interpreter run inside the sandbox; empty means the server's own interpreter."""
    sandbox_packages: str = "numpy,scipy,sympy,mpmath,rapidfuzz"
    """Comma-separated importable packages (besides the standard library) exposed read-only to graders and
    imported once per worker. Missing ones are skipped with a warning."""
    sandbox_memory_bytes: int = pydantic.Field(2 * GIB, ge=16 * 1024**2)
    """Memory a grader may allocate beyond the preloaded runtime (RLIMIT_DATA and RLIMIT_AS), in bytes."""
    sandbox_timeout_seconds: float = pydantic.Field(120.0, gt=0)
    """Wall-clock limit per sample, in seconds, enforced from outside the graded process (SIGKILL)."""
    sandbox_cpu_seconds: float = pydantic.Field(120.0, gt=0)
    """CPU-time limit per sample, in seconds (RLIMIT_CPU)."""
    sandbox_tmp_bytes: int = pydantic.Field(1 * GIB, ge=1024**2)
    """Size of each worker's private tmpfs /tmp, and the largest file a grader may write (RLIMIT_FSIZE)."""
    sandbox_open_files: int = pydantic.Field(64, ge=16, le=65536)
    """Most open file descriptors of a graded process (RLIMIT_NOFILE)."""
    sandbox_processes: int = pydantic.Field(16, ge=1, le=4096)
    """Most tasks (the graded process and its threads) per worker (RLIMIT_NPROC). New processes are
    denied by seccomp whatever this is."""
    sandbox_max_output_bytes: int = pydantic.Field(64 * 1024, ge=0, le=16 * 1024**2)
    """Printed output (stdout / stderr) kept per sample and returned with its error message; the rest is
    dropped."""
    sandbox_workers_per_tenant: int = pydantic.Field(2, ge=1, le=64)
    """Pre-forked workers (one jail each) per tenant: how many batches of one tenant run at once."""
    sandbox_max_tenants: int = pydantic.Field(32, ge=1)
    """Tenants with workers (jails) at once, a hard bound: a new tenant takes the slot of the least recently
    used idle one (whose workers stop), or waits for one to go idle (see sandbox_tenant_wait_seconds)."""
    sandbox_tenant_wait_seconds: float = pydantic.Field(60.0, ge=0)
    """How long a new tenant waits, in order of arrival, for a slot when all sandbox_max_tenants tenants are busy;
    after that its samples fail with resource_limit (retry later)."""
    sandbox_idle_seconds: float = pydantic.Field(900.0, gt=0)
    """A tenant's workers stop after this many seconds without a python grade."""
    sandbox_start_seconds: float = pydantic.Field(60.0, gt=0)
    """How long a worker may take to start (import the allowed packages) before it counts as failed."""
    sandbox_uid: int = pydantic.Field(65534, ge=1)
    """Unprivileged uid graded code runs as (nobody)."""
    sandbox_gid: int = pydantic.Field(65534, ge=1)
    """Unprivileged gid graded code runs as (nogroup)."""

    def package_list(self) -> list[str]:
        """The allowed packages, in order."""
        return [name.strip() for name in self.sandbox_packages.split(",") if name.strip()]
