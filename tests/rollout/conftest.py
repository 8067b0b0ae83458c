"""Rollout test fixtures: the tiny model built by scripts/build_base_model.py, test
weight sets, and real `rft-rollout serve` processes shared by the whole session."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import sys
import tempfile
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from rft.rollout.v1 import rollout_pb2  # noqa: E402
from rollout_helpers import (  # noqa: E402
    Weights,
    build_base_model,
    model_dir_with_weights,
    random_weights,
    state_dict_shapes,
    stub,
    token_prompt,
)
from service_process import ServiceProcess  # noqa: E402

# Limits of the shared server, small so that the limit tests stay cheap. The prompt
# limit is above the context length so that both can be hit.
LIMITS = {"max_prompts": 16, "max_n": 8, "max_tokens": 256, "max_prompt_tokens": 300, "max_model_len": 256}


@dataclasses.dataclass
class Models:
    base_dir: pathlib.Path
    shapes: dict[str, tuple[int, ...]]
    weight_sets: dict[str, Weights]  # "A" is served at start, "B" by the reference engine
    served_dir: pathlib.Path
    reference_dir: pathlib.Path
    weights_dir: pathlib.Path  # the server's --weights-dir (file transport)


@dataclasses.dataclass
class StartupObservations:
    """What a client saw while the engine was loading."""

    health_statuses: list[int]
    generate_codes: list[grpc.StatusCode]


@dataclasses.dataclass
class Rollout:
    proc: ServiceProcess
    channel: grpc.Channel
    startup: StartupObservations
    staging_dir: pathlib.Path

    @property
    def stub(self):
        return stub(self.channel)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Models:
    root = tmp_path_factory.mktemp("rollout-models")
    base_dir = build_base_model.build_model(root / "base", "tiny", seed=0)
    shapes = state_dict_shapes(base_dir)
    weight_sets = {name: random_weights(shapes, seed) for seed, name in enumerate("ABCD", start=1)}
    return Models(
        base_dir=base_dir,
        shapes=shapes,
        weight_sets=weight_sets,
        served_dir=model_dir_with_weights(base_dir, weight_sets["A"], root / "served"),
        reference_dir=model_dir_with_weights(base_dir, weight_sets["B"], root / "reference"),
        weights_dir=root / "shared",
    )


def _observe_startup(proc: ServiceProcess, deadline: float) -> StartupObservations:
    """Poll health (and try a Generate) until the first health answer arrives."""
    observed = StartupObservations([], [])
    request = rollout_pb2.GenerateRequest(prompts=[token_prompt([5, 6])])
    while time.monotonic() < deadline and not observed.health_statuses:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"rft-rollout exited early:\n{proc.logs()}")
        with proc.channel() as channel:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            observed.health_statuses.append(status)
            if status != health_pb2.HealthCheckResponse.SERVING:
                try:
                    stub(channel).Generate(request, timeout=5)
                except grpc.RpcError as exc:
                    observed.generate_codes.append(exc.code())
    return observed


@pytest.fixture(scope="session")
def rollout(models: Models):
    """The shared service, serving weight set "A" as version 0."""
    models.weights_dir.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix="rft-rollout-test-", dir="/dev/shm"))
    args = [
        "--model",
        str(models.served_dir),
        "--weights-dir",
        str(models.weights_dir),
        "--staging-dir",
        str(staging),
        "--warmup-requests",
        "16",
        *[part for name, value in LIMITS.items() for part in (f"--{name.replace('_', '-')}", str(value))],
    ]
    proc = ServiceProcess("rft-rollout", args, ready_timeout=240, wait_serving=False)
    with proc:
        startup = _observe_startup(proc, time.monotonic() + 240)
        proc.wait_until_serving()
        channel = proc.channel()
        try:
            yield Rollout(proc, channel, startup, staging)
        finally:
            channel.close()
    shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture(scope="session")
def reference(models: Models):
    """A second, fresh engine started from weight set "B" (parity tests)."""
    args = ["--model", str(models.reference_dir), "--warmup-requests", "4"]
    with ServiceProcess("rft-rollout", args, ready_timeout=240) as proc:
        channel = proc.channel()
        try:
            yield stub(channel)
        finally:
            channel.close()
