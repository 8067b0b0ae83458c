"""Credentials of the tenancy tests: an operator token and two tenants' API keys, the keys
file the services read (digests only), and gRPC call helpers."""

from __future__ import annotations

import hashlib
import pathlib

import grpc
import pytest

OPERATOR = "op-token-0123456789"
KEYS = {"alice": "sk-alice-0123456789", "bob": "sk-bob-9876543210"}
SPEC = {"type": "string_check", "name": "eq", "input": "{{sample.output_text}}", "reference": "7", "operation": "eq"}


def write_keys_file(path: pathlib.Path) -> pathlib.Path:
    path.write_text(
        "# tenant sha256:<digest of the key>\n"
        + "".join(f"{t} sha256:{hashlib.sha256(k.encode()).hexdigest()}\n" for t, k in KEYS.items())
    )
    return path


def service_args(directory: pathlib.Path) -> list[str]:
    """Flags of a grader or learner that takes the operator token and both tenants' keys."""
    return ["--auth-token", OPERATOR, "--api-keys-file", str(write_keys_file(directory / "api-keys"))]


def auth(secret: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {secret}")]


def code_of(call, request, metadata) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        call(request, metadata=metadata, timeout=30)
    return error.value.code()
