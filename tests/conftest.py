"""Shared test fixtures: real service processes on loopback ports."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import sys
import tempfile

import grpc
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from service_process import ServiceProcess  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
DEMO_BASE = REPO / "models" / "demo-base"
LORA_MAX_RANK = 8


@pytest.fixture
def learner(tmp_path: pathlib.Path):
    """A real learner process with its own data directory."""
    with ServiceProcess("rft-learner", ["--data-dir", str(tmp_path / "learner")]) as proc:
        yield proc


@pytest.fixture
def grader(tmp_path: pathlib.Path):
    """A real grader process with its own data directory."""
    with ServiceProcess("rft-grader", ["--data-dir", str(tmp_path / "grader")]) as proc:
        yield proc


@dataclasses.dataclass
class LoraRollout:
    """A running rft-rollout that takes LoRA adapter updates."""

    proc: ServiceProcess
    channel: grpc.Channel
    model_dir: pathlib.Path
    weights_dir: pathlib.Path  # its --weights-dir (file updates)
    staging_dir: pathlib.Path  # its --staging-dir: the serving adapter's directory lives here

    @property
    def address(self) -> str:
        return self.proc.address

    @property
    def stub(self):
        from rft.rollout.v1 import rollout_pb2_grpc

        return rollout_pb2_grpc.RolloutServiceStub(self.channel)


@pytest.fixture(scope="session")
def lora_rollout(tmp_path_factory):
    """rft-rollout serving models/demo-base with --max-lora-rank 8, shared by the
    session: tests find it at whatever version (and adapter) earlier tests left, so
    they read GetModelInfo and send versions above its policy_version."""
    weights_dir = tmp_path_factory.mktemp("lora-rollout-weights")
    staging_dir = pathlib.Path(tempfile.mkdtemp(prefix="rft-rollout-lora-", dir="/dev/shm"))
    args = ["--model", str(DEMO_BASE), "--max-lora-rank", str(LORA_MAX_RANK), "--warmup-requests", "4"]
    args += ["--weights-dir", str(weights_dir), "--staging-dir", str(staging_dir)]
    with ServiceProcess("rft-rollout", args, ready_timeout=240) as proc:
        channel = proc.channel()
        try:
            yield LoraRollout(proc, channel, DEMO_BASE, weights_dir, staging_dir)
        finally:
            channel.close()
    shutil.rmtree(staging_dir, ignore_errors=True)
