"""Weights from the trainer's tensors to the rollout's wire format, one tensor at a time.

A push reads the model twice, tensor by tensor: once to checksum every tensor (the
manifest, computed once however many replicas there are), then once per replica stream.
Each tensor is cast to the dtype the rollout serves it in and copied to host memory
only while it is being checksummed or sent, so host memory holds one tensor per
stream, not a copy of the model. The casts and copies run in worker threads: the event
loop keeps answering health checks while a large model streams.

Under FSDP a read is a collective pass over every rank's shards (ranks.Updater.
streamed_weights), gathering one tensor at a time: every read is closed when it ends,
early or not, so a pass once begun runs to its end on every rank.

With --weight-sync collective a full update goes as a torch.distributed broadcast
instead (`CollectiveTransfer`; rft_common.collective has both ends): the UpdateWeights
call carries only the manifest, and the tensors go straight from the trainer's
device into the replica's engine workers, gathered and sent one at a time as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from rft.rollout.v1 import rollout_pb2
from rft_common import dtypes
from rft_common.weights import CHECKSUM_ALGORITHMS, DEFAULT_CHUNK_BYTES, WireTensor, chunk_requests, tensor_spec

TensorSource = Callable[[], Iterable[tuple[str, torch.Tensor]]]
"""Gives the current (name, tensor) pairs each time it is called, in a fixed order. An
iterator with close() (a generator) is closed when its reader is done or stops early."""


def served_dtypes(info: rollout_pb2.GetModelInfoResponse) -> dict[str, str]:
    """Tensor name -> the dtype the rollout serves it in (GetModelInfo)."""
    return {spec.name: dtypes.from_proto(spec.dtype) for spec in info.tensors}


def to_wire(name: str, tensor: torch.Tensor, dtype: str) -> WireTensor:
    """`tensor` as `dtype` bytes in host memory (a copy unless it already is exactly that)."""
    host = tensor.detach().to(device="cpu", dtype=getattr(torch, dtype)).contiguous()
    raw = host.reshape(-1).view(torch.uint8).numpy()  # numpy has no bfloat16: bytes
    return WireTensor(name, dtype, tuple(host.shape), memoryview(raw))


def wire_tensors(
    tensors: Iterable[tuple[str, torch.Tensor]], served: Mapping[str, str], default_dtype: str
) -> Iterator[WireTensor]:
    """Each tensor cast to its served dtype (`served_dtype`), as wire bytes."""
    for name, tensor in tensors:
        yield to_wire(name, tensor, served_dtype(name, tensor, served, default_dtype))
        del tensor  # before the next one is read: under FSDP it is gathered then


def served_dtype(name: str, tensor: torch.Tensor, served: Mapping[str, str], default_dtype: str) -> str:
    """The dtype `tensor` goes to the rollout in: the one it serves the name in; a floating
    tensor it does not list (a LoRA adapter's) takes `default_dtype`; others keep their own."""
    if name in served:
        return served[name]
    if tensor.is_floating_point():
        return default_dtype
    return dtypes.dtype_name(tensor.dtype)


class _Reading:
    """One read of a TensorSource as wire tensors, read from worker threads one tensor at a
    time. close() may come from any thread, also while a read is in progress (the stream
    reading was cancelled): it waits for that read, then closes the source's iterator."""

    def __init__(self, source: TensorSource, served: Mapping[str, str], default_dtype: str) -> None:
        self._tensors = iter(source())
        self._wire = wire_tensors(self._tensors, served, default_dtype)
        self._lock = threading.Lock()
        self._ready: WireTensor | None = None

    def next(self) -> WireTensor | None:
        with self._lock:
            return next(self._wire, None)

    def read(self) -> None:
        """Read the next tensor for take(). A worker thread runs this and returns nothing:
        a thread can hold its result a while after the event loop has it (starved in
        call_soon_threadsafe), and a sharded pass gathers the next tensor meanwhile."""
        with self._lock:  # one hold: a close() cannot slip in and leave the tensor here
            self._ready = next(self._wire, None)

    def take(self) -> WireTensor | None:
        """The tensor read() read (None at the end), handed over: the reading lets go of it."""
        with self._lock:
            tensor, self._ready = self._ready, None
        return tensor

    def close(self) -> None:
        with self._lock:
            self._ready = None
            self._wire.close()
            if close := getattr(self._tensors, "close", None):
                close()


class PushPlan:
    """One push of the weights to every replica: the manifest (checksums included), then
    a request stream per replica that reads the tensors again."""

    def __init__(self, source: TensorSource, served: Mapping[str, str], default_dtype: str) -> None:
        self.source = source
        self._served = dict(served)
        self._default = default_dtype
        self.manifest: rollout_pb2.WeightsManifest | None = None

    def reading(self) -> _Reading:
        """A read of the source, for requests(); close it when the stream is over."""
        return _Reading(self.source, self._served, self._default)

    async def prepare(self, algorithm: str = "crc32") -> None:
        """Checksum every tensor (the manifest): one read, in a worker thread. With
        algorithm "none" the manifest is names, dtypes and shapes only, and no tensor is
        cast or copied (under FSDP the pass still gathers each one)."""

        def described() -> rollout_pb2.WeightsManifest:
            tensors = iter(self.source())
            try:
                specs = []
                for name, tensor in tensors:
                    dtype = served_dtype(name, tensor, self._served, self._default)
                    shape = tuple(tensor.shape)
                    specs.append(
                        rollout_pb2.TensorSpec(
                            name=name,
                            dtype=dtypes.DTYPES[dtype].proto,
                            shape=list(shape),
                            size_bytes=dtypes.nbytes(dtype, shape),
                        )
                    )
                    del tensor
                return rollout_pb2.WeightsManifest(tensors=specs, checksum_algorithm=CHECKSUM_ALGORITHMS["none"])
            finally:
                if close := getattr(tensors, "close", None):
                    close()

        def checksums() -> rollout_pb2.WeightsManifest:
            with contextlib.closing(self.reading()) as reading:
                specs = []
                while (tensor := reading.next()) is not None:
                    specs.append(tensor_spec(tensor, algorithm))
                    del tensor  # before the next one is read
                return rollout_pb2.WeightsManifest(tensors=specs, checksum_algorithm=CHECKSUM_ALGORITHMS[algorithm])

        self.manifest = await asyncio.to_thread(described if algorithm == "none" else checksums)

    @property
    def total_bytes(self) -> int:
        assert self.manifest is not None
        return sum(spec.size_bytes for spec in self.manifest.tensors)

    async def requests(
        self,
        version: int,
        lora: rollout_pb2.LoraAdapter | None,
        reading: _Reading | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> AsyncIterator[rollout_pb2.UpdateWeightsRequest]:
        """The header, then every tensor's chunks; each tensor is read in a worker thread,
        from `reading` (a new one if not given: pass one to be able to close it yourself,
        since gRPC never closes a request stream it stopped reading)."""
        manifest = self.manifest
        assert manifest is not None, "prepare() first"
        header = rollout_pb2.WeightsHeader(version=version, manifest=manifest, lora=lora)
        yield rollout_pb2.UpdateWeightsRequest(header=header)
        reading, tensor = reading or self.reading(), None
        try:
            for index, spec in enumerate(manifest.tensors):
                await asyncio.to_thread(reading.read)
                tensor = reading.take()
                if tensor is None:
                    raise ValueError(
                        f"the weights have {index} tensors, the manifest announced {len(manifest.tensors)}"
                    )
                for request in chunk_requests(index, tensor, spec, chunk_bytes):
                    yield request
                tensor = None  # dropped before the next one is read
        finally:
            # In a worker thread, awaited or not (a cancelled stream): finishing a sharded
            # pass gathers the tensors not sent yet, so the one being sent is dropped first.
            tensor = None
            await asyncio.to_thread(reading.close)


@dataclasses.dataclass(frozen=True)
class WeightSyncSettings:
    """How full weights reach the rollout replicas (LearnerConfig's weight_sync_* flags)."""

    mode: str = "stream"
    """stream: chunks on the UpdateWeights call; collective: a torch.distributed broadcast."""
    backend: str = "auto"
    """collective only: gloo, nccl, or auto (nccl when the weights are on CUDA and the replica takes it)."""
    host: str = ""
    """Address the replicas reach this learner's TCPStore at; "" = this host's address on the route to each replica."""
    port: int = 0
    """TCPStore port; 0 = a free one."""
    timeout_seconds: float = 300.0
    """How long a transfer waits for the replica's workers to join, and for each tensor."""


STREAM = WeightSyncSettings()


def route_address(replica: str) -> str:
    """This host's address on the route to `replica` (host:port): what the replica can
    reach us at in most topologies (loopback for a local replica, the pod IP in a cluster)."""
    host = replica.rpartition(":")[0].strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # UDP: nothing is sent, the kernel only picks a route
        return probe.getsockname()[0]


_stores: dict[tuple[str, int], object] = {}
_stores_lock = threading.Lock()


def _shared_store(bind_host: str, port: int, timeout_seconds: float):
    """The process's TCPStore on `bind_host:port` (port 0: a free one), made once: every
    job's pushes share it, each under its own session keys (deleted when it ends)."""
    from rft_common import collective

    with _stores_lock:
        if (bind_host, port) not in _stores:
            _stores[bind_host, port] = collective.HostedStore(bind_host, port, timeout_seconds)
        return _stores[bind_host, port]


def pick_backend(requested: str, offered: Sequence[str], on_cuda: bool) -> str:
    """The backend of a transfer to a replica that takes `offered`; ValueError naming
    the flag to change when none fits."""
    if requested == "auto":
        requested = "nccl" if on_cuda and "nccl" in offered else "gloo"
    if requested not in offered:
        raise ValueError(
            f"--weight-sync-backend {requested}: the replica takes {', '.join(offered) or 'no collective transfers'}"
            + (" (NCCL needs a GPU rollout)" if requested == "nccl" else "; use --weight-sync stream")
        )
    if requested == "nccl" and not on_cuda:
        raise ValueError("--weight-sync-backend nccl: the trainer's weights are not on CUDA; use gloo or auto")
    return requested


class TransferError(Exception):
    """The collective itself failed (the replica went away or gave up, a timeout): the
    replica's answer to the call says whether to try again."""


class TransferStopped(Exception):
    """The push was cancelled while it broadcast."""


class CollectiveTransfer:
    """One attempt at a collective update of one replica: the header to send, and the
    broadcast (`send`, blocking: run it in a thread of its own) of the plan's tensors."""

    def __init__(
        self, settings: WeightSyncSettings, plan: PushPlan, replica: str, backend: str, receivers: int
    ) -> None:
        self._settings = settings
        self._plan = plan
        self._backend = backend
        self._world = 1 + receivers
        self._hosted = _shared_store(settings.host, settings.port, settings.timeout_seconds)
        host = settings.host or route_address(replica)
        self.session = f"rft-weights/{uuid.uuid4().hex}"
        port = self._hosted.port
        self.store_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def header(self, version: int) -> rollout_pb2.WeightsHeader:
        assert self._plan.manifest is not None, "prepare() first"
        return rollout_pb2.WeightsHeader(
            version=version,
            collective=rollout_pb2.CollectiveWeights(
                manifest=self._plan.manifest,
                store_address=self.store_address,
                session=self.session,
                backend=self._backend,
                timeout_seconds=self._settings.timeout_seconds,
            ),
        )

    def send(self, call_ended: threading.Event, stop: threading.Event | None = None) -> bool:
        """Wait for the replica's workers, then broadcast every tensor in manifest order,
        cast to its served dtype (on the tensor's device under NCCL, in host memory under
        gloo). False when the call ended before the workers announced themselves (refused,
        or a repeat of the update already applied): nothing was sent.

        TransferError when the collective fails, TransferStopped once `stop` is set; a
        failure to read the weights, or weights that differ from the manifest, raise as
        they are. The source is closed either way (a sharded pass runs to its end)."""
        from rft_common import collective

        stop = stop or threading.Event()
        store = collective.session_store(self._hosted.store, self.session)
        timeout = self._settings.timeout_seconds
        try:
            try:
                ready = collective.wait_until_ready(
                    store, self._world, timeout, lambda: call_ended.is_set() or stop.is_set()
                )
            except TimeoutError as exc:
                raise TransferError(str(exc)) from exc
            if not ready:
                if stop.is_set():
                    raise TransferStopped("the push was cancelled")
                return False
            self._broadcast(stop, timeout)
            return True
        finally:
            _forget_later(self._hosted.store, self.session, timeout)

    def _broadcast(self, stop: threading.Event, timeout: float) -> None:
        from rft_common import collective

        group, failed = None, True
        tensors = iter(self._plan.source())
        try:
            try:
                store = collective.session_store(self._hosted.store, self.session)
                group = collective.join_group(store, 0, self._world, self._backend, timeout)
            except Exception as exc:
                raise TransferError(f"joining the {self._backend} group failed: {exc}") from exc
            specs = self._plan.manifest.tensors  # type: ignore[union-attr]
            for index, spec in enumerate(specs):
                if stop.is_set():
                    raise TransferStopped(f"the push was cancelled after {index} of {len(specs)} tensors")
                pair = next(tensors, None)
                if pair is None or pair[0] != spec.name:
                    got = "the end" if pair is None else repr(pair[0])
                    raise ValueError(f"tensor {index} of the weights is {got}, the manifest announced {spec.name!r}")
                tensor = pair[1].detach().to(dtype=getattr(torch, dtypes.from_proto(spec.dtype)))
                if self._backend == "gloo":
                    tensor = tensor.cpu()
                try:
                    collective.broadcast_bytes(group, tensor.contiguous())
                except Exception as exc:
                    # The traceback's frames hold the group, and a gloo group closes its
                    # connections only when the last reference goes: clear them, so the
                    # replica learns at once that the transfer broke.
                    traceback.clear_frames(exc.__traceback__)
                    raise TransferError(f"broadcasting {spec.name!r} over {self._backend} failed: {exc}") from exc
                pair = tensor = None  # dropped before the next one is read (gathered, under FSDP)
            failed = False
        finally:
            if close := getattr(tensors, "close", None):
                close()  # a sharded pass runs to its end on every rank
            collective.close_group(group, failed)
            group = None  # gloo closes its connections when the object goes


# Sessions whose keys go once every receiver is surely done with them: (when, store, session).
_forgotten: list[tuple[float, object, str]] = []


def _forget_later(store, session: str, timeout: float) -> None:
    """Delete a session's keys a timeout from now (a receiver may still be reading
    "abandoned"), and the keys of sessions whose time has come."""
    from rft_common import collective

    now = time.monotonic()
    with _stores_lock:
        _forgotten.append((now + timeout + 5, store, session))
        due = [entry for entry in _forgotten if entry[0] <= now]
        _forgotten[:] = [entry for entry in _forgotten if entry[0] > now]
    for _, old_store, old_session in due:
        with contextlib.suppress(Exception):
            collective.delete_session(old_store, old_session)
