"""Update steps on one process or on a data-parallel group of trainer ranks.

With `trainer_ranks` > 1 the job's thread in the learner service is rank 0: it starts
`trainer_ranks - 1` worker processes (`python -m rft_learner.trainer.rank_worker`),
joins them in a torch.distributed group (gloo on CPU), and before every update step
broadcasts the step's inputs. Every rank then runs the same update function on its
share of the batch (trainer.distributed); averaged gradients keep all replicas
identical, so only rank 0 talks to rollout and grader, checkpoints and exports.

Under torchrun (`torchrun ... --no-python rft-learner serve`) the ranks live as long as
the service and may train on GPUs: each rank on cuda:LOCAL_RANK, the group's backend
NCCL (`--dist-backend`, devices.resolve_dist_backend), bound to the rank's device
(`device_id`). The commands rank 0 sends (pickled Python objects) and the ranks' idle
wait between jobs go over a second group, always gloo (`command_group`): NCCL would copy
every pickled command to the GPU, and a rank idling for days inside an NCCL collective
would hold a GPU stream and trip NCCL's watchdog.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from rft_learner.hparams import LoraSpec, ReinforcementParams
from rft_learner.trainer import sharding
from rft_learner.trainer.devices import CPU_FP32, Placement
from rft_learner.trainer.distributed import SERVICE_TIMEOUT, DataParallel
from rft_learner.trainer.policy import ValueHead, trainable_parameters
from rft_learner.trainer.updates import Group, rl_update, sft_update

TIMEOUT = datetime.timedelta(minutes=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_commands: dist.ProcessGroup | None = None
"""The gloo group rank 0's commands travel in, when the default group is not gloo."""


def command_group() -> dist.ProcessGroup | None:
    """The group for rank 0's commands, object broadcasts and the ranks' barriers: a gloo
    group beside an NCCL default group, else None (the default group, gloo itself)."""
    return _commands


def join_group(
    backend: str,
    device: torch.device,
    timeout: datetime.timedelta | None = None,
    command_timeout: datetime.timedelta | None = None,
    **init: Any,
) -> DataParallel:
    """Join this process's trainer group (every rank calls it, in the same order).

    `backend` is devices.resolve_dist_backend's choice. For NCCL the rank's CUDA device
    becomes its current device (object collectives and FSDP's mesh use it) and is bound
    to the group (`device_id`: NCCL connects eagerly, on the right GPU); a gloo group
    with `command_timeout` (default: `timeout`) is made beside it for commands. `init`
    goes to init_process_group (init_method, rank, world_size; torchrun's environment
    when absent)."""
    global _commands
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timeout, device_id=device if backend == "nccl" else None, **init)
    _commands = None
    if backend != "gloo":
        _commands = dist.new_group(backend="gloo", timeout=command_timeout or timeout)
    return DataParallel(dist.get_rank(), dist.get_world_size(), device=device)


def send_command(command: tuple[Any, ...]) -> None:
    """Rank 0: send every other rank its next command (rank_worker.receive_command)."""
    dist.broadcast_object_list([command], src=0, group=command_group())


def receive_command() -> tuple[Any, ...]:
    """A rank > 0: wait for rank 0's next command."""
    holder: list[Any] = [None]
    dist.broadcast_object_list(holder, src=0, group=command_group())
    return holder[0]


def leave_group() -> None:
    """Every rank together: wait for the others (on the command group: a barrier under
    NCCL would need a device and a stream), then tear the group down."""
    dist.barrier(group=command_group())
    dist.destroy_process_group()


def broadcast_module_state(modules: Sequence[torch.nn.Module | None]) -> None:
    """Make every rank's weights rank 0's (torch's state-dict API broadcasts them from
    rank 0 tensor by tensor, on the group's device)."""
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    for module in modules:
        if module is not None:
            state = module.state_dict() if dist.get_rank() == 0 else {}
            set_model_state_dict(module, state, options=options)


class _Trained(torch.nn.Module):
    """Policy and value head under one root, for torch's state-dict API (parameter names
    "policy.*", "value_head.*" in a sharded optimizer's state)."""

    def __init__(self, policy: torch.nn.Module, value_head: torch.nn.Module | None) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = value_head


def setup_phase(
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    value_head: ValueHead | None,
    learning_rate: float,
    optimizer_state: dict | None,
    data_parallel: DataParallel | None,
    sharded: bool,
    resumed: bool,
) -> tuple[torch.optim.Optimizer, DataParallel | None]:
    """What every rank does at a phase start, in the same order (collectives): take rank
    0's weights, shard under FSDP, build AdamW and, when `resumed`, load the optimizer
    state rank 0 holds (`optimizer_state`; None on the other ranks)."""
    if data_parallel is not None:
        # After an SFT warm-up under FSDP the policy is sharded already: its shards stay.
        kept = sharding.is_sharded(model)
        broadcast_module_state([None if kept else model, reference, value_head])
        if sharded:
            if not kept:
                sharding.shard_model(model)
            if reference is not None:
                sharding.shard_model(reference)
            if value_head is not None:
                sharding.shard_value_head(value_head)
        data_parallel = dataclasses.replace(data_parallel, sharded=sharded)
    optimizer = torch.optim.AdamW(trainable_parameters(model, value_head), lr=learning_rate)
    if sharded:
        if resumed:
            # Only rank 0 holds the checkpoint's state; it is broadcast tensor by tensor.
            full = optimizer_state if dist.get_rank() == 0 else {}
            options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
            set_optimizer_state_dict(_Trained(model, value_head), optimizer, full, options=options)
        return optimizer, data_parallel
    if data_parallel is not None and resumed:
        # A checkpoint's state is loaded to host memory; it travels as a pickled object.
        holder = [optimizer_state if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(holder, src=0, group=command_group())
        optimizer_state = holder[0]
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    return optimizer, data_parallel


def gather_state(
    model: torch.nn.Module,
    value_head: ValueHead | None,
    optimizer: torch.optim.Optimizer | None,
    with_optimizer: bool,
) -> tuple[dict[str, torch.Tensor], dict | None, dict | None]:
    """Whole weights (and value head and optimizer state) from every rank's FSDP shards, in
    rank 0's host memory (the other ranks get empty dicts). Every rank calls it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    if not with_optimizer:
        return weights, None, None
    head = get_model_state_dict(value_head, options=options) if value_head is not None else None
    assert optimizer is not None
    return weights, head, get_optimizer_state_dict(_Trained(model, value_head), optimizer, options=options)


def gathered_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """`model`'s state dict, each FSDP-sharded tensor gathered whole just before it is
    yielded (on the weights' device), so only one whole tensor exists at a time, never the
    model. Gathering a tensor is a collective: every rank runs this, to the end, in the
    same order (the state dict's, the same on every rank). Detached first: a push needs
    no autograd graph, and a gathered parameter would carry one."""
    for name, value in model.state_dict().items():
        yield name, value.detach().full_tensor() if isinstance(value, DTensor) else value


def finish_pass(tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Run a pass of gathered_tensors to its end, each tensor dropped as soon as it is
    gathered (a `for` loop would keep the last one while gathering the next)."""
    while next(tensors, None) is not None:
        pass


_torchrun_group: DataParallel | None = None
"""Set in rank 0 of a learner started by torchrun: the group lives as long as the service."""


def join_torchrun_group(backend: str, device: torch.device) -> DataParallel:
    """Any rank of a learner started by torchrun joins the group for the life of the
    service. Under gloo the group's collectives may wait as long as the service idles;
    under NCCL only the command group does, and a stuck training collective fails after
    TIMEOUT."""
    if backend == "gloo":
        return join_group(backend, device, timeout=SERVICE_TIMEOUT)
    return join_group(backend, device, timeout=TIMEOUT, command_timeout=SERVICE_TIMEOUT)


def join_torchrun_ranks(backend: str = "gloo", device: torch.device | None = None) -> None:
    """Rank 0 of a learner started by torchrun joins the group its ranks wait in."""
    global _torchrun_group
    _torchrun_group = join_torchrun_group(backend, device or torch.device("cpu"))


def release_torchrun_ranks() -> None:
    """Tell the torchrun ranks the service is gone, so that torchrun exits with it."""
    try:
        send_command(("exit",))
        leave_group()
    except Exception:  # noqa: BLE001 - a rank already gone: torchrun tears the rest down
        pass


class Updater:
    """Runs SFT / RL update steps here (world 1) or on every rank of a group.

    `micro_batch_tokens` bounds the padded tokens (rows x longest sequence) of each forward
    pass of every update on every rank (0: no bound; see trainer.updates)."""

    def __init__(
        self, world: int, micro_batch_tokens: int = 0, placement: Placement = CPU_FP32, sharding_mode: str = "none"
    ) -> None:
        if micro_batch_tokens < 0:
            raise ValueError(f"micro_batch_tokens must be >= 0, got {micro_batch_tokens}")
        if world > 1 and placement.device.type != "cpu" and _torchrun_group is None:
            raise ValueError(
                "the trainer ranks --trainer-ranks starts run on CPU (gloo); for ranks on GPUs start the learner "
                "with torchrun (torchrun --nproc-per-node N --no-python rft-learner serve ...)"
            )
        self.world = world
        self.micro_batch_tokens = micro_batch_tokens
        self.placement = placement
        self.sharding_mode = sharding_mode
        self.data_parallel: DataParallel | None = None
        self._workers: list[subprocess.Popen] = []
        self._persistent = False
        # One command and its collectives at a time, from whichever thread: the ranks run
        # commands in the order they arrive, so a streamed push (streamed_weights) must not
        # interleave with an update, a checkpoint's gather or another push.
        self._exclusive = threading.Lock()

    def start(self) -> None:
        if self.world <= 1:
            return
        if _torchrun_group is not None:  # torchrun started the ranks with the service: they wait for commands
            self.data_parallel = _torchrun_group
            self._persistent = True
            return
        port = _free_port()
        for rank in range(1, self.world):
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                   "WORLD_SIZE": str(self.world)}  # fmt: skip
            command = [sys.executable, "-m", "rft_learner.trainer.rank_worker"]
            self._workers.append(subprocess.Popen(command, env=env))
        self.data_parallel = join_group(
            "gloo", torch.device("cpu"), timeout=TIMEOUT, init_method=f"tcp://127.0.0.1:{port}", rank=0,
            world_size=self.world,
        )  # fmt: skip

    def _send(self, command: tuple[Any, ...]) -> None:
        send_command(command)

    def begin_phase(
        self,
        model_dir: str,
        model: torch.nn.Module,
        learning_rate: float,
        optimizer_state: dict | None = None,
        reference: torch.nn.Module | None = None,
        value_head: ValueHead | None = None,
        lora: LoraSpec | None = None,
    ) -> torch.optim.Optimizer:
        """Give every rank rank 0's model (with its LoRA adapter, when `lora`), reference
        and value head; shard them under FSDP (`sharding_mode`, not for LoRA); build the phase's
        optimizer with `optimizer_state` (a checkpoint's, from `trainer_state`) and return it."""
        sharded = self.will_shard(lora) and self.data_parallel is not None
        with self._exclusive:
            if self.data_parallel is not None:
                self._send(("begin", model_dir, learning_rate, reference is not None, value_head is not None, lora,
                            self.placement.precision, sharded, optimizer_state is not None))  # fmt: skip
            optimizer, self.data_parallel = setup_phase(
                model, reference, value_head, learning_rate, optimizer_state, self.data_parallel, sharded,
                optimizer_state is not None,
            )  # fmt: skip
        return optimizer

    def will_shard(self, lora: LoraSpec | None) -> bool:
        """Whether begin_phase shards a phase's models (FSDP, several ranks, not LoRA)."""
        return self.sharding_mode == "fsdp" and self.world > 1 and lora is None

    @property
    def sharded(self) -> bool:
        return self.data_parallel is not None and self.data_parallel.sharded

    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The policy's whole state dict: gathered from every rank's shards under FSDP (a
        copy of the model in host memory: for exports, not for weight pushes, which use
        streamed_weights), the model's own tensors otherwise."""
        if not self.sharded:
            return model.state_dict()
        with self._exclusive:
            self._send(("gather", False))
            return gather_state(model, None, None, False)[0]

    def streamed_weights(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        """Under FSDP, the policy's tensors for a weight push, each gathered whole from every
        rank's shards only when it is asked for (gathered_tensors): host memory holds the
        tensor being sent, not a copy of the model.

        The pass starts at the first next(): rank 0 tells the other ranks to join it and
        holds the command lock until it ends, so no other command runs between its
        collectives. Close the iterator to stop early: the rest of the pass is then gathered
        and dropped, for the other ranks are in it too. A pass that is never closed leaves
        every rank waiting, so readers close theirs (weight_sync.PushPlan does)."""
        assert self.sharded, "streamed_weights is for FSDP-sharded models; read model.state_dict() otherwise"
        with self._exclusive:
            self._send(("stream_weights",))
            tensors = gathered_tensors(model)
            try:
                for item in tensors:  # noqa: UP028 - `yield from` would close `tensors` undrained
                    yield item
                    del item  # before the next tensor is gathered: one whole tensor at a time
            finally:
                item = None  # noqa: F841 - a stopped reader's tensor, not kept while the rest is gathered
                finish_pass(tensors)

    def trainer_state(
        self, model: torch.nn.Module, value_head: ValueHead | None, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, torch.Tensor], dict | None, dict]:
        """Weights, value head and optimizer state for a checkpoint, whole (gathered under FSDP)."""
        if not self.sharded:
            return model.state_dict(), value_head.state_dict() if value_head else None, optimizer.state_dict()
        with self._exclusive:
            self._send(("gather", True))
            return gather_state(model, value_head, optimizer, True)

    def train_rl(self, model, reference, optimizer, groups: Sequence[Group], params: ReinforcementParams, pad_id: int,
                 value_head: ValueHead | None) -> dict[str, float]:  # fmt: skip
        """updates.rl_update here, and on every other rank."""
        with self._exclusive:
            if self.data_parallel is not None:
                self._send(("rl_update", list(groups), params.model_dump(), pad_id, self.micro_batch_tokens))
            with self.placement.autocast():
                return rl_update(
                    model, reference, optimizer, groups, params, pad_id, value_head, self.data_parallel,
                    self.micro_batch_tokens,
                )  # fmt: skip

    def train_sft(self, model, optimizer, prompts, targets, pad_id: int) -> dict[str, float]:
        """updates.sft_update here, and on every other rank."""
        with self._exclusive:
            if self.data_parallel is not None:
                self._send(("sft_update", list(prompts), list(targets), pad_id, self.micro_batch_tokens))
            with self.placement.autocast():
                return sft_update(
                    model, optimizer, prompts, targets, pad_id, self.data_parallel, self.micro_batch_tokens
                )

    def close(self) -> None:
        """End the job on every rank: torchrun's ranks wait for the next one; the ranks
        this job started exit, and are killed if they do not."""
        data_parallel, self.data_parallel = self.data_parallel, None
        try:
            if data_parallel is not None:
                with self._exclusive:
                    self._send(("stop",))
                if not self._persistent:
                    dist.barrier(group=command_group())  # matches rank_worker's exit
        finally:
            if data_parallel is not None and not self._persistent:
                dist.destroy_process_group()  # even after a failed stop: the next job builds a new group
            for worker in self._workers:
                try:
                    worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            self._workers.clear()
