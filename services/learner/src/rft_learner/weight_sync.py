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
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping

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
    """Each tensor cast to its served dtype; a floating tensor the rollout does not list
    (a LoRA adapter's) takes `default_dtype`, the engine's; others keep their own."""
    for name, tensor in tensors:
        if name in served:
            dtype = served[name]
        elif tensor.is_floating_point():
            dtype = default_dtype
        else:
            dtype = dtypes.dtype_name(tensor.dtype)
        yield to_wire(name, tensor, dtype)
        del tensor  # before the next one is read: under FSDP it is gathered then


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
        self._source = source
        self._served = dict(served)
        self._default = default_dtype
        self.manifest: rollout_pb2.WeightsManifest | None = None

    def reading(self) -> _Reading:
        """A read of the source, for requests(); close it when the stream is over."""
        return _Reading(self._source, self._served, self._default)

    async def prepare(self, algorithm: str = "crc32") -> None:
        """Checksum every tensor (the manifest): one read, in a worker thread."""

        def checksums() -> rollout_pb2.WeightsManifest:
            with contextlib.closing(self.reading()) as reading:
                specs = []
                while (tensor := reading.next()) is not None:
                    specs.append(tensor_spec(tensor, algorithm))
                    del tensor  # before the next one is read
                return rollout_pb2.WeightsManifest(tensors=specs, checksum_algorithm=CHECKSUM_ALGORITHMS[algorithm])

        self.manifest = await asyncio.to_thread(checksums)

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
