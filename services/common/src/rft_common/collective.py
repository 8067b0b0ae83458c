"""Weights over torch.distributed, both ends (rft.rollout.v1.CollectiveWeights).

The sender (the learner's trainer rank 0) hosts a TCPStore and is rank 0 of a small
group it forms with one rollout replica's engine workers, each of which joins as
1 + its worker rank. The group is made from the backend classes directly, never
through `init_process_group`: the learner's own trainer group and vLLM's groups stay
untouched, and ranks here are the group's own.

Every tensor travels as one broadcast of its raw bytes (a uint8 view), so any dtype
goes over either backend unchanged and the receiver lays the bytes out by the
manifest. gloo moves host memory (any device on either end); NCCL moves GPU memory.

The handshake, in the transfer's own keys of the store (its session):

1. each receiver sets "ready/<rank>" once its replica has checked the update;
2. the sender waits for every receiver, then sets "go" and joins the group, or sets
   "abandoned" if the call ended first (refused, or a repeat already applied) or the
   wait timed out;
3. a receiver joins only after "go", so nobody waits in a rendezvous the other side
   will not join.

NCCL groups are built to wait on the host and raise on a timeout
(TORCH_NCCL_BLOCKING_WAIT=1, TORCH_NCCL_ASYNC_ERROR_HANDLING=0 while the group is
made): torch's defaults return from wait() before the bytes arrived and end the whole
process when an operation times out. That NCCL path has not run on a GPU yet.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist

BACKENDS = ("gloo", "nccl")
READY = "ready/"
GO = "go"
ABANDONED = "abandoned"
_POLL_SECONDS = 0.1
_ENV_LOCK = threading.Lock()


def session_store(store: dist.Store, session: str) -> dist.Store:
    """The transfer's own keys of `store` ("<session>/<key>")."""
    return dist.PrefixStore(session, store)


def delete_session(store: dist.TCPStore, session: str) -> None:
    """Remove every key of a transfer, the backend's rendezvous keys included."""
    prefix = session + "/"
    for key in store.list_keys():
        if key.startswith(prefix):
            store.delete_key(key)


def connect_store(address: str, timeout_seconds: float) -> dist.TCPStore:
    """A client of the sender's TCPStore at `host:port` (`[v6]:port` too)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"store_address {address!r} is not host:port")
    timeout = datetime.timedelta(seconds=timeout_seconds)
    return dist.TCPStore(host.strip("[]"), int(port), is_master=False, timeout=timeout)


class HostedStore:
    """The sender's TCPStore, listening on `bind_host:port` only ("" = every interface;
    port 0 = a free one, see `.port`). torch's own server would listen on every
    interface whatever host it is given, so the socket is bound here and handed over."""

    def __init__(self, bind_host: str, port: int, timeout_seconds: float) -> None:
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((bind_host.strip("[]") or "0.0.0.0", port))
        self._socket.listen()
        self.port = self._socket.getsockname()[1]
        self.store = dist.TCPStore(
            bind_host.strip("[]") or "127.0.0.1",
            self.port,
            is_master=True,
            timeout=datetime.timedelta(seconds=timeout_seconds),
            wait_for_workers=False,
            master_listen_fd=self._socket.fileno(),
        )


@contextlib.contextmanager
def _nccl_waits_on_the_host() -> Iterator[None]:
    """Environment read when an NCCL group is made: wait() blocks the host and raises on
    a timeout, rather than returning at once and killing the process on a timeout."""
    wanted = {"TORCH_NCCL_BLOCKING_WAIT": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "0"}
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def join_group(store: dist.Store, rank: int, world: int, backend: str, timeout_seconds: float):
    """This process's member of the transfer's group (`store` is the session's), as the
    backend's process group object: call its collectives directly, with group ranks."""
    timeout = datetime.timedelta(seconds=timeout_seconds)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world, timeout)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        with _nccl_waits_on_the_host():
            return dist.ProcessGroupNCCL(store, rank, world, options)
    raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")


def close_group(group, failed: bool) -> None:
    """End an NCCL group now: abort after a failure (pending operations are dropped),
    shut down after a success. A gloo group closes its connections only when the object
    goes (abort and shutdown leave a peer waiting out its timeout), so callers also drop
    their reference: `close_group(group, failed); group = None`, since a traceback would
    otherwise keep it alive."""
    nccl = getattr(dist, "ProcessGroupNCCL", None)
    if nccl is None or not isinstance(group, nccl):
        return
    with contextlib.suppress(Exception):
        (group.abort if failed else group.shutdown)()


def broadcast_bytes(group, tensor: torch.Tensor) -> None:
    """Broadcast a contiguous tensor's bytes from rank 0 into every other rank's tensor
    of the same size (in place); returns once they are in (on the host's clock, also
    for a GPU tensor). Empty tensors send nothing."""
    if tensor.numel() == 0:
        return
    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([tensor.reshape(-1).view(torch.uint8)], options).wait()
    if tensor.is_cuda:
        torch.cuda.current_stream(tensor.device).synchronize()


def announce_ready(store: dist.Store, rank: int) -> None:
    store.set(f"{READY}{rank}", "1")


def wait_until_ready(store: dist.Store, world: int, timeout_seconds: float, give_up: Callable[[], bool]) -> bool:
    """Sender: wait until ranks 1..world-1 announced themselves, then set "go" (True).
    Set "abandoned" and return False when `give_up()` turns true first (the update call
    ended without them); TimeoutError, after setting "abandoned", past `timeout_seconds`."""
    deadline = time.monotonic() + timeout_seconds
    keys = [f"{READY}{rank}" for rank in range(1, world)]
    while True:
        if store.check(keys):  # before give_up: workers that announced always get their group
            store.set(GO, "1")
            return True
        if give_up():
            store.set(ABANDONED, "1")
            return False
        if time.monotonic() > deadline:
            store.set(ABANDONED, "1")
            raise TimeoutError(f"{world - 1} receiver(s) did not announce themselves within {timeout_seconds:g}s")
        time.sleep(_POLL_SECONDS)


def wait_for_go(store: dist.Store, timeout_seconds: float) -> bool:
    """Receiver, after announce_ready: True once the sender says "go", False if it
    abandoned the transfer; TimeoutError past `timeout_seconds`."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        if store.check([GO]):
            return True
        if store.check([ABANDONED]):
            return False
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sender did not start the transfer within {timeout_seconds:g}s")
        time.sleep(_POLL_SECONDS)
