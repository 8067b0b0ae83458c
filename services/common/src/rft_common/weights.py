"""Client side of rft.rollout.v1 UpdateWeights: the request stream from named arrays
(used by the learner, the rollout tests and benchmarks).

    stub.UpdateWeights(weight_update_requests(version, state_dict.items()))
    stub.UpdateWeights(file_update_requests(version, "/data/weights/step-12.safetensors"))

A full update sends every state-dict key GetModelInfo lists, tied ones such as
lm_head.weight included. Arrays must already have the served dtype (GetModelInfo.dtype).
A LoRA update (`lora=LoraAdapter(rank, alpha)`) sends only the adapter's lora_A /
lora_B tensors under PEFT's names; see rft.rollout.v1.LoraAdapter.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator

import numpy as np
from rft.rollout.v1 import rollout_pb2

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
NUMPY_DTYPES = {
    "float32": rollout_pb2.TENSOR_DTYPE_FLOAT32,
    "float16": rollout_pb2.TENSOR_DTYPE_FLOAT16,
    "float64": rollout_pb2.TENSOR_DTYPE_FLOAT64,
    "int64": rollout_pb2.TENSOR_DTYPE_INT64,
    "int32": rollout_pb2.TENSOR_DTYPE_INT32,
    "uint8": rollout_pb2.TENSOR_DTYPE_UINT8,
}
CHECKSUM_ALGORITHMS = {
    "none": rollout_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED,
    "crc32": rollout_pb2.CHECKSUM_ALGORITHM_CRC32,
    "sha256": rollout_pb2.CHECKSUM_ALGORITHM_SHA256,
}


def checksum(data: memoryview | bytes, algorithm: str) -> str:
    if algorithm == "crc32":
        return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"
    if algorithm == "sha256":
        return hashlib.sha256(data).hexdigest()
    return ""


def _raw(array: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(array)).cast("B")


def weight_update_requests(
    version: int,
    tensors: Iterable[tuple[str, np.ndarray]],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    algorithm: str = "crc32",
    lora: rollout_pb2.LoraAdapter | None = None,
) -> Iterator[rollout_pb2.UpdateWeightsRequest]:
    """A header with the manifest, then each tensor's bytes in slices of at most
    `chunk_bytes` (keep it well under the server's max message size)."""
    named = [(name, np.ascontiguousarray(array)) for name, array in tensors]
    specs = [
        rollout_pb2.TensorSpec(
            name=name,
            dtype=NUMPY_DTYPES[str(array.dtype)],
            shape=list(array.shape),
            size_bytes=array.nbytes,
            checksum=checksum(_raw(array), algorithm),
        )
        for name, array in named
    ]
    manifest = rollout_pb2.WeightsManifest(tensors=specs, checksum_algorithm=CHECKSUM_ALGORITHMS[algorithm])
    yield rollout_pb2.UpdateWeightsRequest(
        header=rollout_pb2.WeightsHeader(version=version, manifest=manifest, lora=lora)
    )
    for index, (_, array) in enumerate(named):
        data = _raw(array)
        for offset in range(0, data.nbytes, chunk_bytes):
            yield rollout_pb2.UpdateWeightsRequest(
                chunk=rollout_pb2.WeightsChunk(
                    tensor_index=index, offset=offset, data=bytes(data[offset : offset + chunk_bytes])
                )
            )


def file_update_requests(
    version: int, safetensors_path: str, lora: rollout_pb2.LoraAdapter | None = None
) -> Iterator[rollout_pb2.UpdateWeightsRequest]:
    """The single header message of a file update."""
    yield rollout_pb2.UpdateWeightsRequest(
        header=rollout_pb2.WeightsHeader(version=version, safetensors_path=safetensors_path, lora=lora)
    )
