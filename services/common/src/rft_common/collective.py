"""Weights over torch.distributed, both ends (rft.rollout.v1.CollectiveWeights).

The sender (the learner's trainer rank 0) hosts a TCPStore and is rank 0 of a small
group it forms with one rollout replica's engine workers, each of which joins as
1 + its worker rank. The group is made from the backend classes directly, never
through `init_process_group`: the learner's own trainer group and vLLM's groups stay
untouched, and ranks here are the group's own.

Every tensor travels as one broadcast of its raw bytes (a uint8 view), so any dtype
goes over either backend unchanged and the receiver lays the bytes out by the
manifest. gloo moves host memory (any device on either end); NCCL moves GPU memory.

A receiver announces itself with a "ready/<rank>" key under the transfer's session
before it joins, so the sender never blocks in a rendezvous that a refused update
will not join (`wait_until_ready`).
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

BACKENDS = ("gloo", "nccl")
READY_KEY = "ready/"
_POLL_SECONDS = 0.2


def session_store(store: dist.Store, session: str) -> dist.Store:
    """The transfer's own keys of `store`: every session has a fresh namespace."""
    return dist.PrefixStore(session, store)


def connect_store(address: str, timeout_seconds: float) -> dist.TCPStore:
    """A client of the sender's TCPStore at `host:port`."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"store_address {address!r} is not host:port")
    timeout = datetime.timedelta(seconds=timeout_seconds)
    return dist.TCPStore(host.strip("[]"), int(port), is_master=False, timeout=timeout)


def host_store(host: str, port: int, timeout_seconds: float) -> dist.TCPStore:
    """The sender's TCPStore, listening on `port` (0: a free one, see `.port`)."""
    timeout = datetime.timedelta(seconds=timeout_seconds)
    return dist.TCPStore(host, port, is_master=True, timeout=timeout, wait_for_workers=False)


def join_group(store: dist.Store, rank: int, world: int, backend: str, timeout_seconds: float):
    """This process's member of the transfer's group (`store` is the session's), as the
    backend's process group object: call its collectives directly, with group ranks."""
    timeout = datetime.timedelta(seconds=timeout_seconds)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world, timeout)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, world, options)
    raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")


def broadcast_bytes(group, tensor: torch.Tensor) -> None:
    """Broadcast a contiguous tensor's bytes from rank 0 into every other rank's tensor
    of the same size (in place). Empty tensors send nothing."""
    if tensor.numel() == 0:
        return
    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([tensor.reshape(-1).view(torch.uint8)], options).wait()


def announce_ready(store: dist.Store, rank: int) -> None:
    store.set(f"{READY_KEY}{rank}", "1")


def wait_until_ready(
    store: dist.Store, world: int, timeout_seconds: float, abandoned: Callable[[], bool] | threading.Event
) -> bool:
    """Wait until ranks 1..world-1 announced themselves; False as soon as `abandoned()`
    (the update call ended without them: refused, or already applied). TimeoutError
    after `timeout_seconds`."""
    is_abandoned = abandoned.is_set if isinstance(abandoned, threading.Event) else abandoned
    deadline = time.monotonic() + timeout_seconds
    keys = [f"{READY_KEY}{rank}" for rank in range(1, world)]
    while True:
        if is_abandoned():
            return False
        if store.check(keys):
            return True
        if time.monotonic() > deadline:
            raise TimeoutError(f"{world - 1} receiver(s) did not join within {timeout_seconds:g}s")
        time.sleep(_POLL_SECONDS)
