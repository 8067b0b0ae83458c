"""The update step under torchrun with 2 gloo processes equals one process on the whole batch."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import torch
from rft_learner.trainer.policy import load_model
from service_process import free_port

WORKER = pathlib.Path(__file__).with_name("dp_worker.py")
BIN = pathlib.Path(sys.executable).parent


def test_two_gloo_ranks_match_a_single_process(tiny_model, tmp_path) -> None:
    single, parallel = tmp_path / "single.pt", tmp_path / "parallel.pt"
    env_threads = {"OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(WORKER), str(tiny_model), str(single)], check=True, env={**env_threads, "PATH": str(BIN)}
    )
    subprocess.run(
        [
            str(BIN / "torchrun"),
            "--nnodes=1",
            "--nproc-per-node=2",
            f"--master-port={free_port()}",
            str(WORKER),
            str(tiny_model),
            str(parallel),
        ],
        check=True,
        env={**env_threads, "PATH": str(BIN)},
    )
    alone, together = torch.load(single), torch.load(parallel)
    initial = load_model(tiny_model).state_dict()
    moved = 0
    for name, value in alone.items():
        torch.testing.assert_close(together[name], value, rtol=1e-4, atol=1e-6, msg=name)
        moved += int(not torch.equal(value, initial[name]))
    assert moved > len(alone) // 2, "the update barely changed the model: the comparison proves nothing"
