"""The update step under torchrun with 2 gloo processes equals one process on the whole batch,
also when the ranks split their shares into micro-batches, and when model and reference
are sharded with FSDP2 (each rank holding half of every weight)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import torch
from rft_learner.hparams import LoraSpec
from rft_learner.trainer import lora
from rft_learner.trainer.policy import load_model
from service_process import free_port

WORKER = pathlib.Path(__file__).with_name("dp_worker.py")
BIN = pathlib.Path(sys.executable).parent


@pytest.mark.parametrize(
    ("variant", "micro_batch_tokens"),
    # 24 tokens: rank 0's 6 sequences (7-12 tokens) make 3 micro-batches, rank 1's (9-13) 4,
    # so the ranks take different numbers of them between the same collectives.
    # FSDP2 with 24: the rank with fewer micro-batches runs padding passes to match.
    [("full", 0), ("lora", 0), ("full", 24), ("fsdp", 0), ("fsdp", 24)],
)
def test_two_gloo_ranks_match_a_single_process(tiny_model, tmp_path, variant: str, micro_batch_tokens: int) -> None:
    single, parallel = tmp_path / "single.pt", tmp_path / "parallel.pt"
    env_threads = {"OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(WORKER), str(tiny_model), str(single), variant],
        check=True,
        env={**env_threads, "PATH": str(BIN)},
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
            variant,
            str(micro_batch_tokens),
        ],
        check=True,
        env={**env_threads, "PATH": str(BIN)},
    )
    alone, together = torch.load(single), torch.load(parallel)
    torch.manual_seed(0)
    initial = load_model(tiny_model)
    if variant == "lora":
        initial = lora.add_adapter(initial, LoraSpec(rank=4, alpha=8.0))
    initial_state = initial.state_dict()
    trained = [name for name, p in initial.named_parameters(remove_duplicate=False) if p.requires_grad]
    moved = 0
    for name, value in alone.items():
        torch.testing.assert_close(together[name], value, rtol=1e-4, atol=1e-6, msg=name)
        if name in trained:
            moved += int(not torch.equal(value, initial_state[name]))
        else:
            assert torch.equal(value, initial_state[name]), f"{name} is frozen but changed"
    assert moved > len(trained) // 2, "the update barely changed the model: the comparison proves nothing"
