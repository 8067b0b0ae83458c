"""Trainer ranks on GPUs: the backend and device each rank picks, and (on a machine with
two CUDA GPUs) NCCL ranks that train like one process.

The selection tests run anywhere (pure functions, torch's CUDA queries faked). The GPU
tests are marked `skipif` with the reason: they need 2 CUDA devices and a torch build
with NCCL, so they skip on CPU machines and in CI, and run where a GPU machine is lent:

    .venv/bin/pytest tests/learner/test_nccl_ranks.py -q -rs
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from rft_learner.config import LearnerConfig
from rft_learner.trainer import devices
from rft_learner.trainer.devices import (
    learner_dist_backend,
    resolve_dist_backend,
    resolve_placement,
    torchrun_local_rank,
)
from rft_learner.trainer.policy import load_model
from service_process import BIN, free_port

HERE = pathlib.Path(__file__).parent
WORKER = HERE / "nccl_worker.py"
CPU, CUDA1 = torch.device("cpu"), torch.device("cuda", 1)


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


_NO_TWO_GPUS = (
    _gpus() < 2 or not dist.is_nccl_available(),
    f"needs 2 CUDA GPUs and a torch build with NCCL; this machine has {_gpus()} GPU(s)"
    f"{'' if dist.is_nccl_available() else ' and no NCCL in torch ' + torch.__version__}",
)
two_gpus = pytest.mark.skipif(_NO_TWO_GPUS[0], reason=_NO_TWO_GPUS[1])
one_gpu = pytest.mark.skipif(
    _gpus() < 1 or not dist.is_nccl_available(), reason=_NO_TWO_GPUS[1].replace("2 CUDA GPUs", "a CUDA GPU")
)


# ---- which backend (runs anywhere) ----


@pytest.mark.parametrize(
    ("requested", "device", "expected"),
    [("auto", CPU, "gloo"), ("auto", CUDA1, "nccl"), ("gloo", CPU, "gloo"), ("nccl", CUDA1, "nccl")],
)
def test_auto_picks_nccl_for_cuda_ranks_and_gloo_for_cpu_ones(requested, device, expected) -> None:
    assert resolve_dist_backend(requested, device, nccl_available=True) == expected


@pytest.mark.parametrize(
    ("requested", "device", "nccl", "message"),
    [
        ("nccl", CPU, True, "--dist-backend nccl: the trainer runs on cpu; NCCL needs --device cuda"),
        ("nccl", CUDA1, False, "--dist-backend nccl: this torch build has no NCCL"),
        ("auto", CUDA1, False, "--dist-backend nccl: this torch build has no NCCL"),
        ("gloo", CUDA1, True, "--dist-backend gloo: the trainer runs on cuda:1, and gloo cannot"),
        ("mpi", CPU, True, "--dist-backend mpi: expected one of auto, gloo, nccl"),
    ],
)
def test_a_backend_that_cannot_work_is_refused_with_the_flag_named(requested, device, nccl, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_dist_backend(requested, device, nccl_available=nccl)


def test_nccl_for_a_learner_alone_is_refused_not_ignored() -> None:
    """Outside torchrun (WORLD_SIZE 1) no NCCL group ever forms: an explicit nccl names
    the flag and the launch it needs; auto and gloo stand (gloo: the CPU --trainer-ranks)."""
    for device in (CUDA1, CPU):
        with pytest.raises(
            ValueError, match=r"--dist-backend nccl: .*one process \(WORLD_SIZE 1\); start it with torchrun"
        ):
            learner_dist_backend("nccl", device, world=1, nccl_available=True)
    assert learner_dist_backend("auto", CUDA1, world=1, nccl_available=True) == "gloo"
    assert learner_dist_backend("gloo", CPU, world=1) == "gloo"
    with pytest.raises(ValueError, match="--dist-backend mpi: expected one of auto, gloo, nccl"):
        learner_dist_backend("mpi", CPU, world=1)
    # Under torchrun with several ranks: resolve_dist_backend's choice and refusals.
    assert learner_dist_backend("nccl", CUDA1, world=16, nccl_available=True) == "nccl"
    assert learner_dist_backend("auto", CPU, world=2) == "gloo"
    with pytest.raises(ValueError, match="--dist-backend nccl: the trainer runs on cpu"):
        learner_dist_backend("nccl", CPU, world=2, nccl_available=True)


def test_the_flag_parses_and_defaults_to_auto() -> None:
    assert LearnerConfig().dist_backend == "auto"
    assert LearnerConfig(dist_backend="nccl").dist_backend == "nccl"
    with pytest.raises(ValueError):
        LearnerConfig(dist_backend="mpi")


# ---- which device each rank takes (CUDA faked: runs anywhere) ----


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_under_torchrun_each_rank_takes_the_gpu_of_its_local_rank(four_gpus, device) -> None:
    placements = [resolve_placement(device, "auto", local_rank, 4) for local_rank in range(4)]
    assert [p.device for p in placements] == [torch.device("cuda", i) for i in range(4)]
    assert {p.precision for p in placements} == {"bf16-mixed"}
    assert resolve_placement(device, "auto").device == torch.device("cuda", 0)  # outside torchrun: the first GPU


def test_an_explicit_gpu_is_refused_for_several_ranks_per_machine_but_kept_for_one(four_gpus) -> None:
    with pytest.raises(ValueError, match="--device cuda:2: torchrun started 4 ranks on this machine"):
        resolve_placement("cuda:2", "auto", 1, 4)
    assert resolve_placement("cuda:2", "auto", 0, 1).device == torch.device("cuda", 2)
    with pytest.raises(ValueError, match="there are only 4 CUDA devices"):
        resolve_placement("auto", "auto", 5, 8)  # more ranks per node than GPUs


def test_cpu_ranks_stay_on_cpu_under_torchrun(four_gpus) -> None:
    placement = resolve_placement("cpu", "auto", 3, 4)
    assert placement.device == CPU and resolve_dist_backend("auto", placement.device) == "gloo"


def test_torchrun_local_rank_reads_torchruns_environment(monkeypatch) -> None:
    for name in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_local_rank() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_local_rank() is None  # one rank: nothing to spread
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert torchrun_local_rank() == (3, 8)


def test_a_torchrun_rank_asking_for_nccl_on_cpu_stops_at_start_with_the_flag_named(tmp_path) -> None:
    """What a user sees: rank 1 of a CPU learner started with --dist-backend nccl exits
    before joining any group (so torchrun fails fast instead of hanging in a rendezvous)."""
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    env.pop("MASTER_ADDR", None)
    result = subprocess.run(
        [str(BIN / "rft-learner"), "serve", "--data-dir", str(tmp_path), "--device", "cpu", "--dist-backend", "nccl"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "rft-learner: --dist-backend nccl: the trainer runs on cpu" in result.stderr, result.stderr[-2000:]


def test_a_learner_alone_asking_for_nccl_stops_at_start_instead_of_ignoring_it(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    result = subprocess.run(
        [str(BIN / "rft-learner"), "serve", "--data-dir", str(tmp_path), "--dist-backend", "nccl"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "rft-learner: --dist-backend nccl: NCCL connects the ranks torchrun starts" in result.stderr, result.stderr[
        -2000:
    ]


def test_the_help_names_the_flag() -> None:
    result = subprocess.run([str(BIN / "rft-learner"), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert "--dist-backend" in result.stdout and "RFT_LEARNER_DIST_BACKEND" in result.stdout
    assert devices.DIST_BACKENDS == ("auto", "gloo", "nccl")


# ---- NCCL ranks on two GPUs ----


def _run_worker(
    tiny_model,
    out: pathlib.Path,
    variant: str,
    micro_batch_tokens: int,
    ranks: int,
    torchrun: bool = False,
    device: str = "auto",
) -> None:
    env = {"PATH": str(BIN), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    args = [str(WORKER), str(tiny_model), str(out), variant, str(micro_batch_tokens), device]
    if ranks == 1 and not torchrun:
        command = [sys.executable, *args]
        env["CUDA_VISIBLE_DEVICES"] = "0"
    else:
        command = [str(BIN / "torchrun"), "--nnodes=1", f"--nproc-per-node={ranks}", f"--master-port={free_port()}"]
        command += args
    subprocess.run(command, check=True, env=env, timeout=600)


def test_the_gpu_tests_worker_runs_over_gloo_on_cpu(tiny_model, tmp_path) -> None:
    """The GPU tests' script, checked where they skip: the same joins, state broadcast,
    sharding, update and teardown on 2 CPU ranks over gloo, against one process."""
    single, parallel = tmp_path / "single.pt", tmp_path / "parallel.pt"
    _run_worker(tiny_model, single, "fsdp", 24, ranks=1, device="cpu")
    _run_worker(tiny_model, parallel, "fsdp", 24, ranks=2, device="cpu")
    alone, together = torch.load(single), torch.load(parallel)
    for name, value in alone.items():
        torch.testing.assert_close(together[name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_rank_0s_weights_reach_every_rank_with_torchs_state_dict_broadcast(tiny_model, tmp_path) -> None:
    """ranks.broadcast_module_state (set_model_state_dict with broadcast_from_rank0, in
    place of the former hand-written loop) on a LoRA policy and a value head, over gloo."""
    out = tmp_path / "state.pt"
    _run_worker(tiny_model, out, "broadcast", 0, ranks=2, device="cpu")
    rank0, rank1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert set(rank0) == set(rank1) and any("lora_" in k for k in rank0) and any("value_head" in k for k in rank0)
    initial = load_model(tiny_model).state_dict()
    for name, value in rank0.items():
        assert torch.equal(rank1[name], value), name
    changed = [k for k, v in rank0.items() if k.startswith("policy.base_model.model.") and "lora_" not in k
               and k.removeprefix("policy.base_model.model.").replace(".base_layer", "") in initial
               and not torch.equal(v, initial[k.removeprefix("policy.base_model.model.").replace(".base_layer", "")])]  # fmt: skip
    assert changed, "rank 0's perturbed base weights should have reached rank 1"


@one_gpu
@pytest.mark.parametrize("variant", ["full", "fsdp"])
def test_an_nccl_group_of_one_rank_matches_a_single_process(tiny_model, tmp_path, variant: str) -> None:
    """Where only one GPU is lent: torchrun with one rank still joins an NCCL group bound to
    cuda:0 with the gloo command group beside it, broadcasts, shards on a CUDA mesh,
    all-reduces CUDA tensors and gathers the shards; the weights equal a plain run's."""
    single, grouped = tmp_path / "single.pt", tmp_path / "grouped.pt"
    _run_worker(tiny_model, single, variant, 24, ranks=1)
    _run_worker(tiny_model, grouped, variant, 24, ranks=1, torchrun=True)
    alone, together = torch.load(single), torch.load(grouped)
    assert set(alone) == set(together)
    for name, value in alone.items():
        torch.testing.assert_close(together[name], value, rtol=1e-4, atol=1e-5, msg=name)


@two_gpus
@pytest.mark.parametrize(("variant", "micro_batch_tokens"), [("full", 0), ("full", 24), ("fsdp", 0), ("fsdp", 24)])
def test_two_nccl_ranks_match_a_single_process(tiny_model, tmp_path, variant: str, micro_batch_tokens: int) -> None:
    """As test_data_parallel.py does for gloo: 2 NCCL ranks on 2 GPUs (replicas, or FSDP2
    shards) take the same two steps as one process on one GPU."""
    single, parallel = tmp_path / "single.pt", tmp_path / "parallel.pt"
    _run_worker(tiny_model, single, variant, micro_batch_tokens, ranks=1)
    _run_worker(tiny_model, parallel, variant, micro_batch_tokens, ranks=2)
    alone, together = torch.load(single), torch.load(parallel)
    assert set(alone) == set(together)
    initial = load_model(tiny_model).state_dict()
    moved = 0
    for name, value in alone.items():
        # Other reduction orders than one GPU's: a little looser than gloo's atol 1e-6.
        torch.testing.assert_close(together[name].cpu(), value.cpu(), rtol=1e-4, atol=1e-5, msg=name)
        moved += int(not torch.equal(value.cpu(), initial[name]))
    assert moved > len(alone) // 2, "the update barely changed the model: the comparison proves nothing"


@two_gpus
def test_a_learner_started_by_torchrun_on_two_gpus_trains_sharded_over_nccl(tiny_model, tmp_path) -> None:
    """The GPU launch docs/learner.md gives: torchrun --nproc-per-node 2 --no-python
    rft-learner serve --trainer-sharding fsdp, with --device and --dist-backend left at
    auto (cuda:LOCAL_RANK, NCCL). A job trains end to end, and SIGTERM releases rank 1."""
    from jobs_client import learner_args, wait_for
    from rft.learner.v1 import fine_tuning_pb2 as ft
    from service_process import ServiceProcess
    from test_learner_e2e import DONE, job_events, start_job

    with (
        ServiceProcess("rft-grader", ["--data-dir", str(tmp_path / "grader")]) as grader,
        ServiceProcess(
            "rft-rollout", ["--model", str(tiny_model), "--gpu-memory-utilization", "0.2"], ready_timeout=600
        ) as rollout,
    ):
        torchrun = [str(BIN / "torchrun"), "--nnodes=1", "--nproc-per-node=2", f"--master-port={free_port()}",
                    "--no-python"]  # fmt: skip
        args = learner_args(tmp_path / "learner", rollout, grader) + ["--trainer-sharding", "fsdp"]
        learner = ServiceProcess("rft-learner", args, launcher=torchrun, ready_timeout=300)
        with learner, learner.channel() as channel:
            job_id = start_job(channel, tiny_model, tmp_path, n_epochs=1)
            job = wait_for(channel, job_id, DONE)
            assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
            events = job_events(channel, job_id)
            assert any("training on cuda:0" in m for m in events), events
            assert any("data-parallel on 2 trainer ranks with FSDP-sharded models" in m for m in events), events
        # Leaving the block sent SIGTERM: rank 0 stopped and released rank 1 over the gloo command group.
        learner.proc.wait(timeout=120)
        logs = learner.logs()
        assert "learner stopped" in logs and "trainer rank 1 released by rank 0" in logs, logs[-3000:]
