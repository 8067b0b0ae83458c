"""The one table of tensor dtypes every side of a weight update agrees on.

A dtype is named by its torch name ("bfloat16") everywhere in Python: the rollout's
GetModelInfo, the learner's casts, the staged safetensors files. This table maps that
name to the wire enum (rft.rollout.v1.TensorDtype), the safetensors header code and
the element size. numpy has no bfloat16, so bytes travel as raw buffers named by this
table, never as numpy dtypes.
"""

from __future__ import annotations

import dataclasses

from rft.rollout.v1 import rollout_pb2


@dataclasses.dataclass(frozen=True)
class WireDtype:
    name: str
    """torch's name, as `str(torch.bfloat16).removeprefix("torch.")` gives it."""
    proto: int
    """rft.rollout.v1.TensorDtype value."""
    safetensors: str
    """Code in a safetensors header."""
    itemsize: int
    """Bytes per element."""
    floating: bool


DTYPES: dict[str, WireDtype] = {
    d.name: d
    for d in (
        WireDtype("float32", rollout_pb2.TENSOR_DTYPE_FLOAT32, "F32", 4, True),
        WireDtype("float16", rollout_pb2.TENSOR_DTYPE_FLOAT16, "F16", 2, True),
        WireDtype("bfloat16", rollout_pb2.TENSOR_DTYPE_BFLOAT16, "BF16", 2, True),
        WireDtype("float64", rollout_pb2.TENSOR_DTYPE_FLOAT64, "F64", 8, True),
        WireDtype("int64", rollout_pb2.TENSOR_DTYPE_INT64, "I64", 8, False),
        WireDtype("int32", rollout_pb2.TENSOR_DTYPE_INT32, "I32", 4, False),
        WireDtype("uint8", rollout_pb2.TENSOR_DTYPE_UINT8, "U8", 1, False),
    )
}
BY_PROTO: dict[int, WireDtype] = {d.proto: d for d in DTYPES.values()}
BY_SAFETENSORS: dict[str, WireDtype] = {d.safetensors: d for d in DTYPES.values()}
FLOATING = tuple(name for name, d in DTYPES.items() if d.floating)


def dtype_name(dtype: object) -> str:
    """ "bfloat16" from torch.bfloat16, numpy's dtype('float32') or a string; ValueError
    for a dtype that has no wire form."""
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"dtype {name} cannot be sent; expected one of {', '.join(DTYPES)}")
    return name


def from_proto(value: int) -> str:
    """The torch name of a TensorDtype; the enum's own name (e.g. "UNSPECIFIED") when
    it has none, so an error message can show what was sent."""
    if value in BY_PROTO:
        return BY_PROTO[value].name
    try:
        return rollout_pb2.TensorDtype.Name(value).removeprefix("TENSOR_DTYPE_")
    except ValueError:
        return f"unknown({value})"


def nbytes(dtype: str, shape: tuple[int, ...] | list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return DTYPES[dtype].itemsize * count
