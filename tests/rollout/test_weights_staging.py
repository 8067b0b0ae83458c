"""The weight-update checks and staging of the core, driven directly (no engine)."""

from __future__ import annotations

import pathlib
import zlib

import numpy as np
import pytest
from rft_rollout.domain import InvalidRequest, TensorSpec
from rft_rollout.weights import StreamStaging, check_tensor_set, read_safetensors_specs, resolve_weights_path

EXPECTED = {
    "a.weight": TensorSpec("a.weight", "float32", (3, 4), 48),
    "b.bias": TensorSpec("b.bias", "float32", (5,), 20),
    "lm_head.weight": TensorSpec("lm_head.weight", "float32", (3, 4), 48),
}


def specs_for(arrays: dict[str, np.ndarray]) -> list[TensorSpec]:
    return [
        TensorSpec(name, str(a.dtype), a.shape, a.nbytes, f"{zlib.crc32(a.tobytes()) & 0xFFFFFFFF:08x}")
        for name, a in arrays.items()
    ]


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "b.bias": rng.standard_normal(5).astype(np.float32),
        "lm_head.weight": rng.standard_normal((3, 4)).astype(np.float32),
    }


def test_staged_stream_is_a_safetensors_file_with_the_sent_tensors(tmp_path: pathlib.Path) -> None:
    from safetensors.numpy import load_file

    sent = arrays()
    specs = specs_for(sent)
    check_tensor_set(specs, EXPECTED, "manifest")
    staging = StreamStaging(tmp_path / "s.safetensors", specs, "crc32")
    for index, array in enumerate(sent.values()):
        raw = array.tobytes()
        for offset in range(0, len(raw), 7):  # slices that cut elements in half
            staging.write(index, offset, raw[offset : offset + 7])
    staging.finish()
    loaded = load_file(str(tmp_path / "s.safetensors"))
    assert read_safetensors_specs(tmp_path / "s.safetensors") == [
        TensorSpec(s.name, s.dtype, s.shape, s.size_bytes) for s in specs
    ]
    for name, array in sent.items():
        np.testing.assert_array_equal(loaded[name], array)
    staging.discard()
    assert not (tmp_path / "s.safetensors").exists()


def test_a_corrupted_slice_fails_the_checksum_naming_the_tensor(tmp_path: pathlib.Path) -> None:
    sent = arrays()
    staging = StreamStaging(tmp_path / "s.safetensors", specs_for(sent), "crc32")
    for index, array in enumerate(sent.values()):
        raw = bytearray(array.tobytes())
        if index == 1:
            raw[3] ^= 1
        staging.write(index, 0, bytes(raw))
    with pytest.raises(InvalidRequest, match=r"tensor 1 \('b.bias'\): crc32 checksum mismatch"):
        staging.finish()
    staging.discard()


def test_tensor_set_problems_are_each_named() -> None:
    sent = [
        TensorSpec("a.weight", "float16", (3, 4), 24),
        TensorSpec("b.bias", "float32", (6,), 24),
        TensorSpec("c.weight", "float32", (1,), 4),
    ]
    with pytest.raises(InvalidRequest) as error:
        check_tensor_set(sent, EXPECTED, "manifest")
    message = str(error.value)
    assert "manifest[0] ('a.weight'): dtype float16 does not match the model's float32" in message
    assert "manifest[1] ('b.bias'): shape [6] does not match the model's [5]" in message
    assert "manifest[2] ('c.weight'): unknown tensor name" in message
    assert "1 tensor(s) of the model are missing: lm_head.weight" in message


def test_weights_path_must_stay_inside_the_weights_directory(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    (root / "w.safetensors").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"x")
    assert resolve_weights_path("w.safetensors", str(root)) == (root / "w.safetensors").resolve()
    for path in ["../secret", str(tmp_path / "secret"), "/etc/passwd"]:
        with pytest.raises(InvalidRequest, match="outside the weights directory"):
            resolve_weights_path(path, str(root))
    (root / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidRequest, match="outside the weights directory"):
        resolve_weights_path("link", str(root))
    with pytest.raises(InvalidRequest, match="file updates are disabled"):
        resolve_weights_path("w.safetensors", "")
    with pytest.raises(InvalidRequest, match="not a readable file"):
        resolve_weights_path(".", str(root))
