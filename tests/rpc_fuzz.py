"""Fuzzing every RPC of a service from its protobuf descriptors: hypothesis draws request
messages field by field (edge numbers, NaN and infinities, control characters, long
strings, unknown enum values, nested and repeated fields, Struct values) and the service
must answer each with a status a client can act on, and a message that leaks nothing of
its implementation."""

from __future__ import annotations

import math
import re
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

# What a well-behaved service never answers: UNKNOWN means an exception escaped a handler,
# INTERNAL (with these texts) that it was reported raw.
LEAKS = re.compile(r"Traceback|File \"/|object at 0x|<class '|\bline \d+, in\b|site-packages")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(["", " ", "\x00", "../../etc/passwd", "{{item.x}}", "default", "ftjob-x", "file-x", "a" * 5000]),
)


def _json_values(depth: int = 3) -> st.SearchStrategy:
    scalars = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), TEXT)
    if depth == 0:
        return scalars
    inner = _json_values(depth - 1)
    return st.one_of(scalars, st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4))


def _struct() -> st.SearchStrategy:
    def build(values: dict[str, Any]) -> struct_pb2.Struct:
        struct = struct_pb2.Struct()
        struct.update(values)
        return struct

    keys = st.one_of(st.sampled_from(["type", "name", "input", "reference", "operation", "source"]), TEXT)
    return st.dictionaries(keys, _json_values(), max_size=6).map(build)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy:
    kind = field.type
    if field.enum_type is not None:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 50))
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return st.one_of(st.integers(*INT32), st.sampled_from([0, -1, 1, 2**31 - 1, -(2**31)]))
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return st.one_of(st.integers(*INT64), st.sampled_from([0, -1, 1, 2**63 - 1]))
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.one_of(st.floats(), st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1e308]))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300)
    raise AssertionError(f"unhandled field type {kind}")


def messages(descriptor: Descriptor, cls: type[Message], depth: int = 3) -> st.SearchStrategy:
    """Messages of `cls`, every field drawn independently (oneofs: at most one member)."""
    if descriptor.full_name == "google.protobuf.Struct":
        return _struct()

    def value_of(field: FieldDescriptor) -> st.SearchStrategy:
        if field.message_type is not None:
            if depth == 0:
                return st.nothing()
            return messages(field.message_type, _class_of(cls, field), depth - 1)
        return _scalar(field)

    @st.composite
    def build(draw) -> Message:
        message = cls()
        chosen_oneofs = {oneof.name: draw(st.sampled_from([None, *oneof.fields])) for oneof in descriptor.oneofs}
        for field in descriptor.fields:
            if field.containing_oneof is not None and chosen_oneofs[field.containing_oneof.name] is not field:
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                key_field, value_field = (
                    field.message_type.fields_by_name["key"],
                    field.message_type.fields_by_name["value"],
                )
                if value_field.message_type is not None:
                    continue
                entries = draw(st.dictionaries(_scalar(key_field), _scalar(value_field), max_size=3))
                getattr(message, field.name).update(entries)
                continue
            if not draw(st.booleans()):
                continue
            if field.message_type is not None and depth == 0:
                continue  # deep enough: nested messages stay unset (a list of nothing cannot be drawn)
            if field.is_repeated:
                values = draw(st.lists(value_of(field), max_size=4))
                target = getattr(message, field.name)
                for value in values:
                    if field.message_type is not None:
                        target.add().CopyFrom(value)
                    else:
                        target.append(value)
            elif field.message_type is not None:
                getattr(message, field.name).CopyFrom(draw(value_of(field)))
            else:
                setattr(message, field.name, draw(value_of(field)))
        return message

    return build()


def _class_of(cls: type[Message], field: FieldDescriptor) -> type[Message]:
    return type(getattr(cls(), field.name)) if not field.is_repeated else type(getattr(cls(), field.name).add())


def check_answer(call, request, metadata=(), timeout: float = 30) -> None:
    """Call and check the outcome: a result, or a status with a clean message."""
    try:
        result = call(request, metadata=metadata, timeout=timeout)
        if hasattr(result, "__iter__") and not isinstance(result, Message):
            for _ in result:  # a stream: drain it (bounded by the deadline)
                pass
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
        assert code != grpc.StatusCode.UNKNOWN, f"an exception escaped the handler: {details[:500]}"
        assert not LEAKS.search(details), f"{code.name} leaks internals: {details[:500]}"
        if code == grpc.StatusCode.INTERNAL:
            raise AssertionError(f"INTERNAL: {details[:500]}") from None
