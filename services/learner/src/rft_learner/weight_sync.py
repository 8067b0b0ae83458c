"""Weights from the trainer's tensors to the rollout's wire format, one tensor at a time.

A push reads the model twice, tensor by tensor: once to checksum every tensor (the
manifest, computed once however many replicas there are), then once per replica stream.
Each tensor is cast to the dtype the rollout serves it in and copied to host memory
only while it is being checksummed or sent, so host memory holds one tensor per
stream, not a copy of the model. The casts and copies run in worker threads: the event
loop keeps answering health checks while a large model streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping

import torch
from rft.rollout.v1 import rollout_pb2
from rft_common import dtypes
from rft_common.weights import DEFAULT_CHUNK_BYTES, WireTensor, chunk_requests, weights_manifest

TensorSource = Callable[[], Iterable[tuple[str, torch.Tensor]]]
"""Gives the current (name, tensor) pairs each time it is called, in a fixed order."""


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


class PushPlan:
    """One push of the weights to every replica: the manifest (checksums included), then
    a request stream per replica that reads the tensors again."""

    def __init__(self, source: TensorSource, served: Mapping[str, str], default_dtype: str) -> None:
        self._source = source
        self._served = dict(served)
        self._default = default_dtype
        self.manifest: rollout_pb2.WeightsManifest | None = None

    def tensors(self) -> Iterator[WireTensor]:
        return wire_tensors(self._source(), self._served, self._default)

    async def prepare(self, algorithm: str = "crc32") -> None:
        self.manifest = await asyncio.to_thread(weights_manifest, self.tensors(), algorithm)

    @property
    def total_bytes(self) -> int:
        assert self.manifest is not None
        return sum(spec.size_bytes for spec in self.manifest.tensors)

    async def requests(
        self, version: int, lora: rollout_pb2.LoraAdapter | None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> AsyncIterator[rollout_pb2.UpdateWeightsRequest]:
        """The header, then every tensor's chunks; each tensor is read in a worker thread."""
        manifest = self.manifest
        assert manifest is not None, "prepare() first"
        header = rollout_pb2.WeightsHeader(version=version, manifest=manifest, lora=lora)
        yield rollout_pb2.UpdateWeightsRequest(header=header)
        tensors = self.tensors()
        for index, spec in enumerate(manifest.tensors):
            tensor = await asyncio.to_thread(next, tensors, None)
            if tensor is None:
                raise ValueError(f"the weights have {index} tensors, the manifest announced {len(manifest.tensors)}")
            for request in chunk_requests(index, tensor, spec, chunk_bytes):
                yield request
