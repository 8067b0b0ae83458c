"""Client side of rft.rollout.v1 UpdateWeights: the request stream from named tensors
(used by the learner, the rollout tests and benchmarks).

    stub.UpdateWeights(weight_update_requests(version, state_dict.items()))
    stub.UpdateWeights(file_update_requests(version, "/data/weights/step-12.safetensors"))

A full update sends every state-dict key GetModelInfo lists, tied ones such as
lm_head.weight included, each in the dtype GetModelInfo lists for it (the served
dtype; the learner casts on the way out). A LoRA update (`lora=LoraAdapter(rank,
alpha)`) sends only the adapter's lora_A / lora_B tensors under PEFT's names; see
rft.rollout.v1.LoraAdapter.

Tensors are `WireTensor`s: a name, a dtype from `rft_common.dtypes` and raw bytes. For
a push to several replicas, `weights_manifest` checksums every tensor once and each
replica's stream reads the tensors again one at a time, so host memory holds one
tensor per stream, not a copy of the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from collections.abc import Iterable, Iterator

import numpy as np
from rft.rollout.v1 import rollout_pb2

from rft_common.dtypes import DTYPES, dtype_name, nbytes

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
CHECKSUM_ALGORITHMS = {
    "none": rollout_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED,
    "crc32": rollout_pb2.CHECKSUM_ALGORITHM_CRC32,
    "sha256": rollout_pb2.CHECKSUM_ALGORITHM_SHA256,
}


@dataclasses.dataclass(frozen=True)
class WireTensor:
    """One tensor as it goes over the wire: C-order bytes of `dtype` (a torch name)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: memoryview

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"{self.name}: dtype {self.dtype} has no wire form")
        if self.data.nbytes != nbytes(self.dtype, self.shape):
            raise ValueError(f"{self.name}: {self.data.nbytes} bytes for {self.dtype} {list(self.shape)}")

    @classmethod
    def from_numpy(cls, name: str, array: np.ndarray) -> WireTensor:
        array = np.ascontiguousarray(array)
        return cls(name, dtype_name(array.dtype), tuple(array.shape), memoryview(array).cast("B"))


def checksum(data: memoryview | bytes, algorithm: str) -> str:
    if algorithm == "crc32":
        return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"
    if algorithm == "sha256":
        return hashlib.sha256(data).hexdigest()
    return ""


def _wire(tensor: WireTensor | tuple[str, np.ndarray]) -> WireTensor:
    return tensor if isinstance(tensor, WireTensor) else WireTensor.from_numpy(*tensor)


def tensor_spec(tensor: WireTensor, algorithm: str) -> rollout_pb2.TensorSpec:
    return rollout_pb2.TensorSpec(
        name=tensor.name,
        dtype=DTYPES[tensor.dtype].proto,
        shape=list(tensor.shape),
        size_bytes=tensor.data.nbytes,
        checksum=checksum(tensor.data, algorithm),
    )


def weights_manifest(
    tensors: Iterable[WireTensor | tuple[str, np.ndarray]], algorithm: str = "crc32"
) -> rollout_pb2.WeightsManifest:
    """Every tensor's name, dtype, shape, size and checksum, reading each once."""
    return rollout_pb2.WeightsManifest(
        tensors=[tensor_spec(_wire(t), algorithm) for t in tensors],
        checksum_algorithm=CHECKSUM_ALGORITHMS[algorithm],
    )


def chunk_requests(
    index: int, tensor: WireTensor, spec: rollout_pb2.TensorSpec, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[rollout_pb2.UpdateWeightsRequest]:
    """Tensor `index`'s bytes in slices of at most `chunk_bytes`; ValueError when the
    tensor is not the one the manifest announced at that index."""
    if (tensor.name, tensor.data.nbytes) != (spec.name, spec.size_bytes):
        raise ValueError(
            f"tensor {index} is {tensor.name!r} ({tensor.data.nbytes} bytes) but the manifest announced "
            f"{spec.name!r} ({spec.size_bytes} bytes): the weights changed during the push"
        )
    data = tensor.data
    for offset in range(0, data.nbytes, chunk_bytes):
        chunk = rollout_pb2.WeightsChunk(
            tensor_index=index, offset=offset, data=bytes(data[offset : offset + chunk_bytes])
        )
        yield rollout_pb2.UpdateWeightsRequest(chunk=chunk)


def weight_update_requests(
    version: int,
    tensors: Iterable[WireTensor | tuple[str, np.ndarray]],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    algorithm: str = "crc32",
    lora: rollout_pb2.LoraAdapter | None = None,
    manifest: rollout_pb2.WeightsManifest | None = None,
) -> Iterator[rollout_pb2.UpdateWeightsRequest]:
    """A header with the manifest, then each tensor's bytes in slices of at most
    `chunk_bytes` (keep it well under the server's max message size).

    Without `manifest` the tensors are held in memory to checksum them first; with a
    manifest from `weights_manifest` over the same tensors, `tensors` may be a lazy
    iterator that yields one tensor at a time.
    """
    if manifest is None:
        tensors = [_wire(t) for t in tensors]
        manifest = weights_manifest(tensors, algorithm)
    yield rollout_pb2.UpdateWeightsRequest(
        header=rollout_pb2.WeightsHeader(version=version, manifest=manifest, lora=lora)
    )
    count = 0
    for index, tensor in enumerate(tensors):
        if index >= len(manifest.tensors):
            raise ValueError(f"more tensors than the {len(manifest.tensors)} the manifest announced")
        yield from chunk_requests(index, _wire(tensor), manifest.tensors[index], chunk_bytes)
        count += 1
    if count != len(manifest.tensors):
        raise ValueError(f"{count} tensors sent but the manifest announced {len(manifest.tensors)}")


def file_update_requests(
    version: int, safetensors_path: str, lora: rollout_pb2.LoraAdapter | None = None
) -> Iterator[rollout_pb2.UpdateWeightsRequest]:
    """The single header message of a file update."""
    yield rollout_pb2.UpdateWeightsRequest(
        header=rollout_pb2.WeightsHeader(version=version, safetensors_path=safetensors_path, lora=lora)
    )
