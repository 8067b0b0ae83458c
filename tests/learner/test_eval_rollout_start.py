"""The rollout service a tool-using evaluation run starts (rft_common.rollout_process,
through the learner's evals._rollout_sampler; `rft evals run` wraps the same class): what
a failed start tells the tenant and what it leaves behind, and that the service does not
outlive a learner that is SIGKILLed. Stand-in commands take vLLM's place (the launcher,
the health wait and the clean-up are the real ones)."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import types

import pytest
from rft_common.rollout_process import RolloutProcess, RolloutStartError
from rft_learner.evaluations import RunFailure, SamplingSettings
from rft_learner.http_api import evals

SECRET = "tool server bob-billing target=https://billing.bob.internal:8443 model /data/bob/ft-model"
CRASHING = textwrap.dedent(
    f"""
    import sys
    print("loading tool servers")
    print({SECRET!r})
    sys.exit(3)
    """
)


@pytest.fixture
def crashing_rollout(tmp_path, monkeypatch) -> str:
    """A rollout command that logs another tenant's settings and exits before serving;
    temporary files (the rollout's log) go to tmp_path."""
    script = tmp_path / "crashing_rollout.py"
    script.write_text(CRASHING)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def _logs(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    return sorted(tmp_path.glob("rft-evals-rollout-*.log"))


def test_a_failed_start_tells_the_tenant_a_reference_and_the_learner_log_the_details(
    crashing_rollout, tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(evals, "default_rollout_command", lambda: crashing_rollout)
    model = types.SimpleNamespace(id="ft:tool-base:alice:sfx:ftjob-1", directory=tmp_path / "model")
    settings = SamplingSettings(
        n=1, temperature=0.0, top_p=1.0, max_completion_tokens=16, seed=None, max_turns=2, tool_servers=("calc",)
    )

    async def run() -> None:
        async with evals._rollout_sampler(model, "alice", settings):
            pytest.fail("the rollout cannot have started")

    with caplog.at_level(logging.ERROR), pytest.raises(RunFailure) as failed:
        asyncio.run(run())
    message = failed.value.message
    assert failed.value.code == "model_unavailable"
    assert "bob" not in message and "billing" not in message and str(tmp_path) not in message, message
    assert "exited with code" not in message and ".log" not in message, message
    (reference,) = re.findall(r"reference ([0-9a-f]{12})", message)
    assert message.startswith(f"the rollout service for {model.id} did not start"), message
    # The operator finds the details under the reference in the learner's log.
    (record,) = [r for r in caplog.records if reference in r.getMessage()]
    assert record.name == "rft_common.rollout_process" and record.levelno == logging.ERROR
    assert SECRET in record.getMessage() and "exited with code 3" in record.getMessage()
    assert _logs(tmp_path) == [], "a failed start's log file is deleted"


def test_the_cli_keeps_the_details_and_the_log_for_its_own_user(crashing_rollout, tmp_path) -> None:
    async def start() -> None:
        async with RolloutProcess(crashing_rollout, str(tmp_path / "model"), detailed_errors=True):
            pytest.fail("the rollout cannot have started")

    with pytest.raises(RolloutStartError) as failed:
        asyncio.run(start())
    (log,) = _logs(tmp_path)
    assert SECRET in failed.value.message and str(log) in failed.value.message
    assert "exited with code 3" in failed.value.message and not failed.value.reference


def test_a_command_that_cannot_run_is_a_launch_error_either_way(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    missing = str(tmp_path / "no" / "rft-rollout")
    for detailed in (True, False):
        with pytest.raises(RolloutStartError) as failed:
            asyncio.run(RolloutProcess(missing, "m", detailed_errors=detailed).__aenter__())
        assert failed.value.launch
        assert (missing in failed.value.message) == detailed, failed.value.message
    assert _logs(tmp_path) == []  # nothing ran: no log to keep


# ---- the service dies with its parent ----

CHILD = textwrap.dedent(
    """
    import os, pathlib, signal, sys, time
    out = pathlib.Path(sys.argv[1])
    def stop(*_):
        (out / "child.sigterm").write_text("SIGTERM")
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    (out / "child.pid").write_text(str(os.getpid()))
    while True:
        time.sleep(1)
    """
)
PARENT = textwrap.dedent(
    """
    import asyncio, sys
    from rft_common.rollout_process import RolloutProcess

    async def main():
        async with RolloutProcess(sys.argv[1], "model", ready_timeout=600):
            pass

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_rollout_gets_sigterm_when_its_parent_is_sigkilled(tmp_path) -> None:
    """A stand-in learner starts a stand-in rollout (never SERVING) and is SIGKILLed while
    it waits: the rollout, in a session of its own, still gets SIGTERM."""
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(child))} {shlex.quote(str(tmp_path))}"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, command], env=env)
    pid_file, stopped = tmp_path / "child.pid", tmp_path / "child.sigterm"
    pid = 0
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert parent.poll() is None and time.monotonic() < deadline, "the stand-in rollout did not start"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid, "the rollout leads a session and group of its own"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while not stopped.exists():
            assert time.monotonic() < deadline, "the rollout outlived its SIGKILLed parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if pid and not stopped.exists():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
