"""Receiving and checking weight updates before anything touches the engine.

Both transports end as one safetensors file that the engine worker loads:

- stream: `StreamStaging` lays the manifest out as a safetensors file (in /dev/shm by
  default, so it never hits a disk) and writes each chunk at its place, checking order,
  sizes and checksums as bytes arrive;
- file: `resolve_weights_path` keeps the path inside the configured weights directory
  and `read_safetensors_specs` reads the file's header.

`check_tensor_set` compares what a client sends with the model's own state dict: an
unknown name, a duplicate, a missing tensor (a tied lm_head.weight included) or a wrong
dtype, shape or size is an `InvalidRequest` naming the tensor. `check_lora_header` and
`check_lora_tensor_set` do the same for a LoRA adapter (PEFT's tensor names, shapes
from the adapted weights and the rank), and `write_adapter_config` gives a staged
adapter the adapter_config.json that PEFT (and so vLLM) expects next to its tensors.
Pure Python, no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import pathlib
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Literal

from rft_common.dtypes import BY_SAFETENSORS, DTYPES, nbytes

from rft_rollout.domain import InvalidRequest, LoraAdapter, TensorSpec

ChecksumAlgorithm = Literal["none", "crc32", "sha256"]
CHECKSUM_ALGORITHMS = ("none", "crc32", "sha256")

_CHECKSUM_PATTERNS = {"crc32": re.compile(r"[0-9a-f]{8}"), "sha256": re.compile(r"[0-9a-f]{64}")}
# How many problems one error message lists before it says "and N more".
_MAX_LISTED_PROBLEMS = 5


def expected_size(dtype: str, shape: Sequence[int]) -> int:
    return nbytes(dtype, tuple(shape))


def _raise_problems(problems: list[str]) -> None:
    if not problems:
        return
    listed = "; ".join(problems[:_MAX_LISTED_PROBLEMS])
    more = len(problems) - _MAX_LISTED_PROBLEMS
    raise InvalidRequest(listed + (f"; and {more} more problem(s)" if more > 0 else ""))


def check_tensor_set(sent: Sequence[TensorSpec], expected: Mapping[str, TensorSpec], where: str) -> None:
    """Raise InvalidRequest unless `sent` is exactly the model's state dict: every
    expected name once, with the expected dtype and shape, and a consistent size."""
    problems: list[str] = []
    seen: set[str] = set()
    for index, spec in enumerate(sent):
        label = f"{where}[{index}] ({spec.name!r})"
        model_spec = expected.get(spec.name)
        if model_spec is None:
            problems.append(f"{label}: unknown tensor name; the model has no such state-dict key")
            continue
        if spec.name in seen:
            problems.append(f"{label}: duplicate tensor name")
            continue
        seen.add(spec.name)
        if spec.dtype != model_spec.dtype:
            problems.append(f"{label}: dtype {spec.dtype} does not match the model's {model_spec.dtype}")
        if tuple(spec.shape) != model_spec.shape:
            problems.append(f"{label}: shape {list(spec.shape)} does not match the model's {list(model_spec.shape)}")
        elif spec.dtype in DTYPES and spec.size_bytes != expected_size(spec.dtype, spec.shape):
            problems.append(
                f"{label}: size_bytes {spec.size_bytes} does not match dtype and shape "
                f"({expected_size(spec.dtype, spec.shape)} bytes)"
            )
    missing = [name for name in expected if name not in seen]
    if missing:
        shown = ", ".join(missing[:_MAX_LISTED_PROBLEMS]) + (", ..." if len(missing) > _MAX_LISTED_PROBLEMS else "")
        problems.append(
            f"{where}: {len(missing)} tensor(s) of the model are missing: {shown} "
            "(a full update sends every state-dict key, tied ones such as lm_head.weight included)"
        )
    _raise_problems(problems)


# PEFT's names of an adapter's tensors: base_model.model.<module>.lora_{A,B}.weight.
LORA_NAME = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight")
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"


def check_lora_header(lora: LoraAdapter, max_lora_rank: int) -> None:
    """The adapter's rank and alpha are usable on a server taking ranks up to
    `max_lora_rank` (0: a server started without LoRA support)."""
    if max_lora_rank == 0:
        raise InvalidRequest(
            "header.lora: this server does not take LoRA adapters; start it with --max-lora-rank "
            "(at least the adapter's rank) or send the full state dict"
        )
    problems = []
    if lora.rank < 1:
        problems.append(f"header.lora.rank: {lora.rank} must be at least 1")
    elif lora.rank > max_lora_rank:
        problems.append(f"header.lora.rank: {lora.rank} is above this server's max_lora_rank {max_lora_rank}")
    if not (math.isfinite(lora.alpha) and lora.alpha > 0):
        problems.append(f"header.lora.alpha: {lora.alpha} must be a finite number > 0")
    if lora.base_version is not None and lora.base_version < 0:
        problems.append(f"header.lora.base_version: {lora.base_version} must be at least 0")
    _raise_problems(problems)


def check_lora_tensor_set(
    sent: Sequence[TensorSpec], expected: Mapping[str, TensorSpec], rank: int, where: str
) -> list[str]:
    """Raise InvalidRequest unless `sent` is a LoRA adapter of rank `rank` for the
    model whose state dict is `expected`: PEFT names, each for a 2-D `<module>.weight`
    of the model, lora_A [rank, in_features] and lora_B [out_features, rank] in the
    weight's dtype, every module with both, each name once, at least one module.
    Returns the adapted modules in the order sent."""
    problems: list[str] = []
    seen: set[str] = set()
    parts: dict[str, set[str]] = {}
    for index, spec in enumerate(sent):
        label = f"{where}[{index}] ({spec.name!r})"
        match = LORA_NAME.fullmatch(spec.name)
        if match is None:
            problems.append(
                f"{label}: not a LoRA tensor name; expected 'base_model.model.<module>.lora_A.weight' or "
                "'base_model.model.<module>.lora_B.weight'"
            )
            continue
        if spec.name in seen:
            problems.append(f"{label}: duplicate tensor name")
            continue
        seen.add(spec.name)
        module, part = match["module"], match["part"]
        weight = expected.get(f"{module}.weight")
        if weight is None:
            problems.append(f"{label}: unknown module; the model has no state-dict key {module + '.weight'!r}")
            continue
        if len(weight.shape) != 2:
            problems.append(
                f"{label}: {module}.weight has shape {list(weight.shape)}; only 2-D weights take an adapter"
            )
            continue
        parts.setdefault(module, set()).add(part)
        out_features, in_features = weight.shape
        want = (rank, in_features) if part == "A" else (out_features, rank)
        if spec.dtype != weight.dtype:
            problems.append(f"{label}: dtype {spec.dtype} does not match the model's {weight.dtype}")
        if tuple(spec.shape) != want:
            problems.append(
                f"{label}: shape {list(spec.shape)}, expected {list(want)} "
                f"(lora_{part} of {module}.weight {list(weight.shape)} at rank {rank})"
            )
        elif spec.dtype in DTYPES and spec.size_bytes != expected_size(spec.dtype, spec.shape):
            problems.append(
                f"{label}: size_bytes {spec.size_bytes} does not match dtype and shape "
                f"({expected_size(spec.dtype, spec.shape)} bytes)"
            )
    for module, have in parts.items():
        if have != {"A", "B"}:
            (given,) = have
            other = "B" if given == "A" else "A"
            problems.append(
                f"{where}: module {module!r} has lora_{given} but no lora_{other} "
                f"('base_model.model.{module}.lora_{other}.weight')"
            )
    if not sent:
        problems.append(f"{where}: an adapter needs at least one module (its lora_A and lora_B)")
    _raise_problems(problems)
    return list(parts)


def write_adapter_config(directory: pathlib.Path, lora: LoraAdapter, modules: Sequence[str]) -> None:
    """adapter_config.json for the adapter of `modules` (their state-dict prefixes), as
    PEFT's save_pretrained writes it for a plain LoRA (the fields vLLM's PEFTHelper reads)."""
    config = {
        "peft_type": "LORA",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        # PEFT matches target modules by the last part of the module name.
        "target_modules": sorted({module.rsplit(".", 1)[-1] for module in modules}),
        "bias": "none",
        "lora_dropout": 0.0,
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "task_type": "CAUSAL_LM",
    }
    (directory / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2))


def check_checksums_format(specs: Sequence[TensorSpec], algorithm: ChecksumAlgorithm, where: str) -> None:
    """Every checksum is well formed for `algorithm`; with no algorithm none is set."""
    problems = []
    for index, spec in enumerate(specs):
        label = f"{where}[{index}] ({spec.name!r}).checksum"
        if algorithm == "none":
            if spec.checksum:
                problems.append(f"{label}: set, but checksum_algorithm is unspecified")
        elif not _CHECKSUM_PATTERNS[algorithm].fullmatch(spec.checksum):
            digits = 8 if algorithm == "crc32" else 64
            problems.append(f"{label}: expected {digits} lowercase hex digits of {algorithm}, got {spec.checksum!r}")
    _raise_problems(problems)


def _safetensors_header(specs: Sequence[TensorSpec]) -> tuple[bytes, list[int]]:
    """The header of a safetensors file holding `specs` in order, and each tensor's
    offset in the data section."""
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offsets = []
    position = 0
    for spec in specs:
        offsets.append(position)
        entries[spec.name] = {
            "dtype": DTYPES[spec.dtype].safetensors,
            "shape": list(spec.shape),
            "data_offsets": [position, position + spec.size_bytes],
        }
        position += spec.size_bytes
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data section starts 8-byte aligned
    return len(header).to_bytes(8, "little") + header, offsets


class _Digest:
    def __init__(self, algorithm: ChecksumAlgorithm) -> None:
        self.algorithm = algorithm
        self._crc = 0
        self._sha = hashlib.sha256() if algorithm == "sha256" else None

    def update(self, data: bytes) -> None:
        if self.algorithm == "crc32":
            self._crc = zlib.crc32(data, self._crc)
        elif self._sha is not None:
            self._sha.update(data)

    def hexdigest(self) -> str:
        if self.algorithm == "crc32":
            return f"{self._crc & 0xFFFFFFFF:08x}"
        return self._sha.hexdigest() if self._sha is not None else ""


class StreamStaging:
    """A safetensors file being filled from a chunk stream.

    Chunks must come tensor by tensor in manifest order, each tensor's slices in
    order. `write` is blocking (copy + checksum): call it off the event loop. The file
    is removed by `discard` (or kept, closed, by `close`).
    """

    def __init__(self, path: pathlib.Path, specs: Sequence[TensorSpec], algorithm: ChecksumAlgorithm) -> None:
        self.path = path
        self.specs = list(specs)
        self.algorithm = algorithm
        header, offsets = _safetensors_header(self.specs)
        self._data_start = len(header)
        self._offsets = offsets
        self.total_bytes = sum(spec.size_bytes for spec in self.specs)
        self._received = [0] * len(self.specs)
        self._digests = [_Digest(algorithm) for _ in self.specs]
        self._current = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w+b")  # noqa: SIM115 - closed in finish/discard
        try:
            self._file.truncate(self._data_start + self.total_bytes)
            self._file.write(header)
            self._file.flush()
            self._map = mmap.mmap(self._file.fileno(), self._data_start + self.total_bytes)
        except BaseException:
            self.discard()
            raise

    def _label(self, index: int) -> str:
        return f"tensor {index} ({self.specs[index].name!r})"

    def write(self, tensor_index: int, offset: int, data: bytes) -> None:
        """Place one slice; InvalidRequest when it is out of order or overruns."""
        if not 0 <= tensor_index < len(self.specs):
            raise InvalidRequest(
                f"chunk.tensor_index: {tensor_index} is out of range (the manifest has {len(self.specs)} tensors)"
            )
        if tensor_index < self._current:
            raise InvalidRequest(
                f"chunk.tensor_index: {self._label(tensor_index)} arrived after {self._label(self._current)}; "
                "tensors must be sent in manifest order"
            )
        while self._current < tensor_index:
            self._require_complete(self._current, f"before {self._label(tensor_index)} started")
            self._current += 1
        size = self.specs[tensor_index].size_bytes
        received = self._received[tensor_index]
        if offset != received:
            raise InvalidRequest(
                f"chunk.offset: {offset} for {self._label(tensor_index)}, expected {received}; "
                "slices of a tensor must arrive in order"
            )
        if offset + len(data) > size:
            raise InvalidRequest(
                f"chunk.data: {offset + len(data)} bytes for {self._label(tensor_index)} overrun its size_bytes {size}"
            )
        start = self._data_start + self._offsets[tensor_index] + offset
        self._map[start : start + len(data)] = data
        self._digests[tensor_index].update(data)
        self._received[tensor_index] = offset + len(data)

    def _require_complete(self, index: int, when: str) -> None:
        if self._received[index] != self.specs[index].size_bytes:
            raise InvalidRequest(
                f"{self._label(index)}: {self._received[index]} of {self.specs[index].size_bytes} bytes received {when}"
            )

    def finish(self) -> None:
        """Check that every tensor is complete and matches its checksum; flush."""
        for index in range(len(self.specs)):
            self._require_complete(index, "when the stream ended")
        problems = []
        if self.algorithm != "none":
            for index, spec in enumerate(self.specs):
                actual = self._digests[index].hexdigest()
                if actual != spec.checksum:
                    problems.append(
                        f"{self._label(index)}: {self.algorithm} checksum mismatch "
                        f"(manifest {spec.checksum}, data {actual})"
                    )
        _raise_problems(problems)
        self._map.flush()
        self.close()

    def close(self) -> None:
        """Close the file, leaving it in place."""
        if getattr(self, "_map", None) is not None:
            self._map.close()
            self._map = None
        if not self._file.closed:
            self._file.close()

    def discard(self) -> None:
        """Close and delete the file."""
        self.close()
        self.path.unlink(missing_ok=True)


def resolve_weights_path(path: str, weights_dir: str) -> pathlib.Path:
    """The real path of a client-given safetensors file, which must be a regular
    file inside `weights_dir` (symlinks resolved), or InvalidRequest."""
    if not weights_dir:
        raise InvalidRequest(
            "header.safetensors_path: file updates are disabled on this server (start it with --weights-dir)"
        )
    root = pathlib.Path(os.path.realpath(weights_dir))
    given = pathlib.Path(path)
    real = pathlib.Path(os.path.realpath(given if given.is_absolute() else root / given))
    if os.path.commonpath([real, root]) != str(root):
        raise InvalidRequest(f"header.safetensors_path: {path!r} is outside the weights directory {str(root)!r}")
    if not real.is_file():
        raise InvalidRequest(f"header.safetensors_path: {path!r} is not a readable file")
    return real


def read_safetensors_specs(path: pathlib.Path) -> list[TensorSpec]:
    """Name, dtype, shape and size of every tensor in a safetensors file (header only;
    the library checks that the offsets fit the file)."""
    from safetensors import SafetensorError, safe_open

    specs = []
    try:
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():
                tensor = handle.get_slice(name)
                code = tensor.get_dtype()
                shape = tuple(tensor.get_shape())
                if code not in BY_SAFETENSORS:
                    raise InvalidRequest(f"header.safetensors_path: tensor {name!r} has unsupported dtype {code}")
                dtype = BY_SAFETENSORS[code].name
                specs.append(TensorSpec(name, dtype, shape, expected_size(dtype, shape)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidRequest(f"header.safetensors_path: not a readable safetensors file: {exc}") from None
    return specs
