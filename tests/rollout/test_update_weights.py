"""UpdateWeights: every bad update is refused before anything is applied (the old
weights keep serving), and good updates over both transports switch the version."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from rft.rollout.v1 import rollout_pb2
from rft_common.weights import file_update_requests, weight_update_requests
from rollout_helpers import current_version, greedy, metric_value, save_safetensors

PROBES = [[5, 6, 7], [40, 41, 42, 43], [70, 3, 71]]
CHUNK = 64 * 1024  # several chunks per large tensor

Messages = list[rollout_pb2.UpdateWeightsRequest]


def stream_messages(version: int, weights: dict[str, np.ndarray], **kwargs) -> Messages:
    return list(weight_update_requests(version, weights.items(), chunk_bytes=CHUNK, **kwargs))


def _manifest(messages: Messages) -> rollout_pb2.WeightsManifest:
    return messages[0].header.manifest


# -- bad stream updates: (build messages, expected message fragment) -------------------


def unknown_name(v, w):
    return stream_messages(v, {**w, "model.layers.0.mlp.extra.weight": np.zeros(4, np.float32)})


def wrong_shape(v, w):
    name = "model.layers.0.mlp.up_proj.weight"
    return stream_messages(v, {**w, name: np.ascontiguousarray(w[name].T)})


def wrong_dtype(v, w):
    return stream_messages(v, {**w, "model.norm.weight": w["model.norm.weight"].astype(np.float64)})


def missing_tied_lm_head(v, w):
    return stream_messages(v, {k: a for k, a in w.items() if k != "lm_head.weight"})


def checksum_mismatch(v, w):
    messages = stream_messages(v, w)
    chunk = messages[5].chunk
    chunk.data = bytes([chunk.data[0] ^ 0xFF]) + chunk.data[1:]
    return messages


def sha256_mismatch(v, w):
    messages = stream_messages(v, w, algorithm="sha256")
    chunk = messages[-1].chunk
    chunk.data = chunk.data[:-1] + bytes([chunk.data[-1] ^ 0x01])
    return messages


def size_mismatch(v, w):
    messages = stream_messages(v, w)
    _manifest(messages).tensors[2].size_bytes += 4
    return messages


def version_not_above_current(v, w):
    return stream_messages(v - 1, w)


def tensors_out_of_order(v, w):
    messages = stream_messages(v, w)
    first_of_tensor_1 = next(i for i, m in enumerate(messages[1:], 1) if m.chunk.tensor_index == 1)
    messages.insert(1, messages.pop(first_of_tensor_1))
    return messages


def slice_out_of_order(v, w):
    messages = stream_messages(v, w)
    index = next(i for i, m in enumerate(messages) if m.HasField("chunk") and m.chunk.offset > 0)
    messages[index - 1], messages[index] = messages[index], messages[index - 1]
    return messages


def chunk_overrun(v, w):
    messages = stream_messages(v, w)
    messages[-1].chunk.data += b"\0\0\0\0"
    return messages


def stream_ends_early(v, w):
    return stream_messages(v, w)[:-1]


def tensor_index_out_of_range(v, w):
    messages = stream_messages(v, w)
    messages[-1].chunk.tensor_index = 999
    return messages


def malformed_checksum(v, w):
    messages = stream_messages(v, w)
    _manifest(messages).tensors[0].checksum = "XYZ"
    return messages


def duplicate_name(v, w):
    messages = stream_messages(v, w)
    manifest = _manifest(messages)
    manifest.tensors[1].name = manifest.tensors[0].name
    return messages


def chunk_before_header(v, w):
    messages = stream_messages(v, w)
    return [messages[1], messages[0], *messages[2:]]


def second_header(v, w):
    messages = stream_messages(v, w)
    return [*messages, messages[0]]


def header_without_source(v, w):
    return [rollout_pb2.UpdateWeightsRequest(header=rollout_pb2.WeightsHeader(version=v))]


STREAM_CASES: dict[str, tuple[Callable, str]] = {
    "unknown name": (unknown_name, "unknown tensor name"),
    "wrong shape": (wrong_shape, "shape [128, 768] does not match the model's [768, 128]"),
    "wrong dtype": (wrong_dtype, "dtype float64 does not match the model's float32"),
    "missing tied lm_head": (missing_tied_lm_head, "missing: lm_head.weight"),
    "crc32 mismatch": (checksum_mismatch, "crc32 checksum mismatch"),
    "sha256 mismatch": (sha256_mismatch, "sha256 checksum mismatch"),
    "size mismatch": (size_mismatch, "size_bytes"),
    "version not above current": (version_not_above_current, "header.version"),
    "tensors out of order": (tensors_out_of_order, "bytes received before tensor 1"),
    "slices out of order": (slice_out_of_order, "slices of a tensor must arrive in order"),
    "chunk overrun": (chunk_overrun, "overrun its size_bytes"),
    "stream ends early": (stream_ends_early, "when the stream ended"),
    "tensor index out of range": (tensor_index_out_of_range, "chunk.tensor_index: 999 is out of range"),
    "malformed checksum": (malformed_checksum, "expected 8 lowercase hex digits"),
    "duplicate name": (duplicate_name, "duplicate tensor name"),
    "chunk before header": (chunk_before_header, "the first message of an update must be a header"),
    "second header": (second_header, "only the first message of an update may be a header"),
    "header without source": (header_without_source, "one of manifest or safetensors_path"),
}


@dataclasses.dataclass
class Served:
    version: int
    outputs: list[list[int]]


def served(rollout) -> Served:
    return Served(current_version(rollout.stub), [list(s.token_ids) for s in greedy(rollout.stub, PROBES)])


def assert_refused(rollout, messages: Messages, expected: str, before: Served) -> None:
    failures = metric_value(rollout.proc.metrics(), "rft_rollout_weight_update_failures_total", reason="invalid") or 0
    with pytest.raises(grpc.RpcError) as error:
        rollout.stub.UpdateWeights(iter(messages), timeout=120)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert expected in error.value.details()
    # Nothing changed: same version, same outputs, no staged file left behind.
    assert served(rollout) == before
    assert list(rollout.staging_dir.iterdir()) == []
    after = metric_value(rollout.proc.metrics(), "rft_rollout_weight_update_failures_total", reason="invalid")
    assert after == failures + 1


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_bad_stream_update_is_refused_and_old_weights_keep_serving(rollout, models, case: str) -> None:
    build, expected = STREAM_CASES[case]
    before = served(rollout)
    # Weight set "D" is never applied, so a wrongly accepted update would change outputs.
    messages = build(before.version + 1, models.weight_sets["D"])
    assert_refused(rollout, messages, expected, before)


FILE_CASES = ["outside the weights directory", "symlink out of the directory", "missing file", "missing tensor"]
FILE_CASES += ["not a safetensors file", "chunks after a path"]


@pytest.mark.parametrize("case", FILE_CASES)
def test_bad_file_update_is_refused_and_old_weights_keep_serving(rollout, models, tmp_path, case: str) -> None:
    weights = models.weight_sets["D"]
    before = served(rollout)
    version = before.version + 1
    inside = models.weights_dir / f"bad-{case.replace(' ', '-')}.safetensors"
    expected = {
        "outside the weights directory": "is outside the weights directory",
        "symlink out of the directory": "is outside the weights directory",
        "missing file": "is not a readable file",
        "missing tensor": "missing: lm_head.weight",
        "not a safetensors file": "not a readable safetensors file",
        "chunks after a path": "no chunks may follow a header with safetensors_path",
    }[case]
    if case == "outside the weights directory":
        path = str(save_safetensors(weights, tmp_path / "outside.safetensors"))
    elif case == "symlink out of the directory":
        os.symlink(save_safetensors(weights, tmp_path / "target.safetensors"), inside)
        path = str(inside)
    elif case == "missing file":
        path = str(models.weights_dir / "no-such.safetensors")
    elif case == "missing tensor":
        path = str(save_safetensors({k: a for k, a in weights.items() if k != "lm_head.weight"}, inside))
    elif case == "not a safetensors file":
        inside.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
        path = str(inside)
    else:
        path = str(save_safetensors(weights, inside))
    messages = list(file_update_requests(version, path))
    if case == "chunks after a path":
        messages += stream_messages(version, weights)[1:3]
    try:
        assert_refused(rollout, messages, expected, before)
    finally:
        inside.unlink(missing_ok=True)


def test_stream_and_file_updates_switch_the_served_weights(rollout, models) -> None:
    weights_b, weights_c = models.weight_sets["B"], models.weight_sets["C"]
    metrics_before = rollout.proc.metrics()
    start = current_version(rollout.stub)

    response = rollout.stub.UpdateWeights(iter(stream_messages(start + 1, weights_c)), timeout=120)
    total = sum(array.nbytes for array in weights_c.values())
    assert (response.version, response.previous_version) == (start + 1, start)
    assert (response.tensor_count, response.total_bytes) == (len(weights_c), total)
    assert response.receive_seconds > 0 and response.apply_seconds > 0
    outputs_c = served(rollout)
    assert outputs_c.version == start + 1
    samples = greedy(rollout.stub, PROBES)
    assert {s.policy_version for s in samples} == {start + 1}

    # Another set changes the outputs; the same set again, over the file transport,
    # gives back exactly the outputs of the first update.
    rollout.stub.UpdateWeights(iter(stream_messages(start + 2, weights_b)), timeout=120)
    assert served(rollout).outputs != outputs_c.outputs
    path = save_safetensors(weights_c, models.weights_dir / "c.safetensors")
    relative = rollout.stub.UpdateWeights(file_update_requests(start + 3, "c.safetensors"), timeout=120)
    assert (relative.version, relative.tensor_count, relative.total_bytes) == (start + 3, len(weights_c), total)
    assert served(rollout).outputs == outputs_c.outputs
    rollout.stub.UpdateWeights(file_update_requests(start + 4, str(path)), timeout=120)  # absolute path
    assert served(rollout) == Served(start + 4, outputs_c.outputs)
    assert list(rollout.staging_dir.iterdir()) == []

    metrics_after = rollout.proc.metrics()

    def delta(name: str, **labels: str) -> float:
        return (metric_value(metrics_after, name, **labels) or 0) - (metric_value(metrics_before, name, **labels) or 0)

    assert metric_value(metrics_after, "rft_rollout_policy_version") == start + 4
    assert delta("rft_rollout_weight_update_seconds_count", transport="stream") == 2
    assert delta("rft_rollout_weight_update_seconds_count", transport="file") == 2
    assert delta("rft_rollout_weight_update_bytes_total") == 4 * total
    assert delta("rft_rollout_requests_total", rpc="UpdateWeights") == 4


def test_resending_the_applied_update_is_ok_and_changes_nothing(rollout, models) -> None:
    """A learner whose reply was lost retries the same update: OK, nothing applied
    again. The same version with other weights is still refused."""
    start = current_version(rollout.stub)
    messages = stream_messages(start + 1, models.weight_sets["B"])
    first = rollout.stub.UpdateWeights(iter(messages), timeout=120)
    after_first = served(rollout)
    bytes_before = metric_value(rollout.proc.metrics(), "rft_rollout_weight_update_bytes_total")

    again = rollout.stub.UpdateWeights(iter(messages), timeout=120)
    assert (again.version, again.previous_version) == (first.version, first.previous_version)
    assert (again.tensor_count, again.total_bytes) == (first.tensor_count, first.total_bytes)
    assert again.apply_seconds == 0 and again.aborted_requests == 0
    assert served(rollout) == after_first
    assert metric_value(rollout.proc.metrics(), "rft_rollout_weight_update_bytes_total") == bytes_before
    assert list(rollout.staging_dir.iterdir()) == []

    other = stream_messages(start + 1, models.weight_sets["C"])
    assert_refused(rollout, other, "already applied with another manifest", after_first)
