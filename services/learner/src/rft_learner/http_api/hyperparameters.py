"""What a job's hyperparameters are, for forms: each field's type, default, bounds, choices
and documentation, read from the same pydantic models and proto messages that check a
job (hparams.py, fine_tuning.proto), so a form cannot drift from what the API accepts."""

from __future__ import annotations

import typing
from typing import Any

import annotated_types
import pydantic
from pydantic_core import PydanticUndefined
from rft.learner.v1 import fine_tuning_pb2

from rft_learner import hparams
from rft_learner.http_api.convert import enum_prefix

# OpenAI's names first, in OpenAI's order; then ours, grouped as docs/learner.md does.
LEADING = ("n_epochs", "batch_size", "learning_rate_multiplier", "compute_multiplier", "eval_interval", "eval_samples")


def _kind(annotation: Any) -> tuple[str, list[str], bool]:
    """(type name, choices, may be auto) of a field's annotation."""
    args = typing.get_args(annotation)
    nullable = type(None) in args
    inner = [a for a in args if a is not type(None)] or [annotation]
    if typing.get_origin(annotation) is list:
        return "array", [], False
    if typing.get_origin(inner[0]) is typing.Literal:
        return "string", [str(c) for c in typing.get_args(inner[0])], nullable
    base = inner[0]
    name = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(base, "string")
    return name, [], nullable


def _bounds(info: pydantic.fields.FieldInfo) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in info.metadata:
        for attr, key in (
            ("ge", "minimum"),
            ("le", "maximum"),
            ("gt", "exclusive_minimum"),
            ("lt", "exclusive_maximum"),
        ):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                out[key] = getattr(item, attr)
    return out


def describe(model: type[pydantic.BaseModel], message: type) -> list[dict[str, Any]]:
    """One entry per hyperparameter a job body may set (the proto message's scalar fields)."""
    proto_fields = {f.name: f for f in message.DESCRIPTOR.fields if f.message_type is None}
    fields = []
    for name, info in model.model_fields.items():
        if name not in proto_fields:
            continue
        kind, choices, auto = _kind(info.annotation)
        enum = proto_fields[name].enum_type
        if enum is not None and not choices:
            prefix = enum_prefix(enum)
            choices = [v.name.removeprefix(prefix).lower() for v in enum.values if v.number]
        default = None if info.default is PydanticUndefined else info.default
        fields.append(
            {
                "name": name,
                "type": kind,
                "default": default,
                "auto": auto and default is None,
                "choices": choices,
                "description": " ".join((info.description or "").split()),
                "openai": name in LEADING,
                **_bounds(info),
            }
        )
    order = {name: i for i, name in enumerate(LEADING)}
    return sorted(fields, key=lambda f: order.get(f["name"], len(LEADING)))


def catalogue() -> dict[str, Any]:
    return {
        "object": "fine_tuning.hyperparameters",
        "reinforcement": describe(hparams.ReinforcementParams, fine_tuning_pb2.ReinforcementHyperparameters),
        "supervised": describe(hparams.SupervisedParams, fine_tuning_pb2.SupervisedHyperparameters),
        "algorithms": {
            name: {"kl_coef": d.kl_coef, "clip_range": d.clip_range, "paper": d.paper}
            for name, d in hparams.ALGORITHM_DEFAULTS.items()
        },
        "base_learning_rate": hparams.BASE_LEARNING_RATE,
    }
