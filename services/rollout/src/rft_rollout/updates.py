"""Weight updates: receive, check and stage a whole update, then apply it atomically.

Updates are received and checked completely (staged as a safetensors file) before the
engine is touched; then, under one lock, the engine aborts in-flight requests, loads
the file and labels later tokens with the new version. A LoRA update is staged as a
PEFT adapter directory (its tensors and an adapter_config.json) that the engine serves
from; the directory stays while the adapter serves and is removed when a later update
replaces it (a full update removes the adapter). A collective update is received by
the engine's workers themselves, into buffers beside the model, and applied from
there under the same lock; a repeat of the update last applied is answered without
joining the transfer. Plain Python over the `Engine` interface; no protobuf.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import pathlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from rft_rollout import metrics
from rft_rollout.domain import (
    CollectiveTransfer,
    InvalidRequest,
    LoraAdapter,
    NotReady,
    TensorSpec,
    TransferFailed,
    UpdateHeader,
    UpdateResult,
    WeightsRejected,
)
from rft_rollout.engine import ChecksumMismatch, Engine, TransferBroken, WeightsNotApplied, shapes_by_name
from rft_rollout.model_spec import ModelDescription
from rft_rollout.weights import (
    ADAPTER_FILE,
    CHECKSUM_ALGORITHMS,
    StreamStaging,
    check_checksums_format,
    check_lora_header,
    check_lora_tensor_set,
    check_tensor_set,
    read_safetensors_specs,
    resolve_weights_path,
    write_adapter_config,
)

if TYPE_CHECKING:
    from rft_rollout.core import Settings

log = logging.getLogger(__name__)

Chunk = tuple[int, int, bytes]  # (tensor_index, offset, data)
MAX_TRANSFER_TIMEOUT_SECONDS = 3600


@dataclasses.dataclass(frozen=True)
class _ServedAdapter:
    """The LoRA adapter serving on top of the weights, and its staged directory."""

    lora: LoraAdapter
    directory: pathlib.Path


class WeightUpdates:
    """The policy version and the updates that change it. `check_serving` raises
    NotReady when the service stopped serving; `stop_serving(reason)` stops it (when
    the engine failed half-way through applying weights)."""

    def __init__(
        self,
        engine: Engine,
        model: ModelDescription,
        settings: Settings,
        check_serving: Callable[[], None],
        stop_serving: Callable[[str], Awaitable[None]],
    ) -> None:
        self.engine = engine
        self.model = model
        self.settings = settings
        self.version = 0
        self.base_version = 0  # of the last full weights: what an adapter goes on top of
        self._adapter: _ServedAdapter | None = None
        # The last update applied (its header's fingerprint) and what it answered: the
        # same update sent again (a client retrying after a lost reply) is answered
        # again, changing nothing.
        self._applied: tuple[tuple, UpdateResult] | None = None
        self._expected = {spec.name: spec for spec in model.tensors}
        self._lock = asyncio.Lock()
        # The workers hold one received update at a time.
        self._receiving = asyncio.Lock()
        self._check_serving = check_serving
        self._stop_serving = stop_serving
        metrics.POLICY_VERSION.set(0)
        metrics.LORA_RANK.set(0)

    @property
    def lora(self) -> LoraAdapter | None:
        """The adapter serving on top of the weights, if any."""
        return None if self._adapter is None else self._adapter.lora

    def close(self) -> None:
        """Remove the serving adapter's directory (the engine is done with it)."""
        if self._adapter is not None:
            shutil.rmtree(self._adapter.directory, ignore_errors=True)

    async def update(self, header: UpdateHeader | None, chunks: AsyncIterator[Chunk]) -> UpdateResult:
        """Receive and check a whole update, then apply it atomically. `header` is None
        when the stream did not start with one."""
        metrics.REQUESTS.labels("UpdateWeights").inc()
        started = time.perf_counter()
        with _count_failure():
            self._check_serving()
            if header is None:
                raise InvalidRequest("header: the first message of an update must be a header")
            if self._applied is not None and self._applied[0] == _fingerprint(header):
                return self._repeat(self._applied[1])
            self._check_version(header.version)
            if header.lora is not None:
                check_lora_header(header.lora, self.settings.max_lora_rank)
                self._check_base_version(header.lora)
            if header.collective is not None:
                transport = "collective"
                result = await self._update_from_collective(header, chunks, started)
            elif header.tensors is not None:
                transport = "stream"
                result = await self._update_from_stream(header, chunks, started)
            elif header.safetensors_path is not None:
                transport = "file"
                result = await self._update_from_file(header, chunks, started)
            else:
                raise InvalidRequest("header: one of manifest or safetensors_path is required")
        metrics.WEIGHT_UPDATE_SECONDS.labels(transport).observe(time.perf_counter() - started)
        return result

    def _check_tensors(self, specs: Sequence[TensorSpec], lora: LoraAdapter | None, where: str) -> list[str]:
        """The whole state dict, or an adapter (then returns its modules)."""
        if lora is None:
            check_tensor_set(specs, self._expected, where)
            return []
        return check_lora_tensor_set(specs, self._expected, lora.rank, where)

    def _staging_path(self, header: UpdateHeader) -> pathlib.Path:
        """Where to stage an update: a safetensors file, or an adapter directory's."""
        name = f"v{header.version}-{uuid.uuid4().hex[:8]}"
        if header.lora is None:
            return self.settings.staging_dir / f"update-{name}.safetensors"
        return self.settings.staging_dir / f"adapter-{name}" / ADAPTER_FILE

    def _discard_unless_served(self, path: pathlib.Path) -> None:
        """Remove a staged update unless it is the adapter serving now (blocking)."""
        if self._adapter is not None and self._adapter.directory == path.parent:
            return
        if path.name == ADAPTER_FILE:
            shutil.rmtree(path.parent, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    async def _update_from_stream(self, header: UpdateHeader, chunks: AsyncIterator[Chunk], started: float):
        """Receive every chunk into a staged file, check it, then apply it."""
        specs = header.tensors or ()
        algorithm = header.checksum_algorithm
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise InvalidRequest(f"header.manifest.checksum_algorithm: unknown value {algorithm}")
        modules = self._check_tensors(specs, header.lora, "header.manifest.tensors")
        check_checksums_format(specs, algorithm, "header.manifest.tensors")
        path = self._staging_path(header)
        try:
            staging = await asyncio.to_thread(StreamStaging, path, specs, algorithm)
            try:
                async for tensor_index, offset, data in chunks:
                    await asyncio.to_thread(staging.write, tensor_index, offset, data)
                await asyncio.to_thread(staging.finish)
            finally:
                staging.close()
            received = time.perf_counter() - started
            return await self._apply(header, path, modules, len(specs), staging.total_bytes, received)
        finally:
            await asyncio.to_thread(self._discard_unless_served, path)

    async def _update_from_collective(self, header: UpdateHeader, chunks: AsyncIterator[Chunk], started: float):
        """Have the engine's workers receive every tensor over torch.distributed, then
        apply what they received."""
        async for _ in chunks:
            raise InvalidRequest("chunk: no chunks may follow a header with a collective transfer")
        transfer = header.collective
        assert transfer is not None and header.tensors is not None
        if header.lora is not None:
            raise InvalidRequest(
                "header.lora: a collective transfer carries full weights only; send an adapter as a manifest stream"
            )
        self._check_transfer(transfer)
        specs = header.tensors
        algorithm = header.checksum_algorithm
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise InvalidRequest(f"header.collective.manifest.checksum_algorithm: unknown value {algorithm}")
        self._check_tensors(specs, None, "header.collective.manifest.tensors")
        check_checksums_format(specs, algorithm, "header.collective.manifest.tensors")
        async with self._receiving:
            if self._applied is not None and self._applied[0] == _fingerprint(header):
                return self._repeat(self._applied[1])  # a retry that waited for the first attempt
            try:
                try:
                    await self.engine.receive_weights(
                        {
                            "store_address": transfer.store_address,
                            "session": transfer.session,
                            "backend": transfer.backend,
                            "world": 1 + self.engine.facts.weight_receivers,
                            "timeout_seconds": transfer.timeout_seconds,
                            "checksum_algorithm": algorithm,
                            "specs": [(s.name, s.dtype, list(s.shape), s.size_bytes, s.checksum) for s in specs],
                        }
                    )
                except ChecksumMismatch as exc:
                    raise InvalidRequest(f"header.collective: {exc}") from None
                except WeightsNotApplied as exc:
                    raise WeightsRejected(f"the engine refused the weights: {exc}") from None
                except TransferBroken as exc:
                    raise TransferFailed(f"the collective transfer broke, nothing changed: {exc}") from None
                received = time.perf_counter() - started
                total = sum(spec.size_bytes for spec in specs)
                return await self._apply(header, None, [], len(specs), total, received, transfer.session)
            finally:
                # Also when this call was cancelled mid-receive: the workers finish the
                # receive regardless, and must not keep a copy of the model afterwards.
                await asyncio.shield(self.engine.discard_received_weights())

    def _check_transfer(self, transfer: CollectiveTransfer) -> None:
        backends = self.engine.facts.collective_backends
        problems = []
        if transfer.backend not in backends:
            takes = ", ".join(backends) if backends else "none: this engine takes no collective transfers"
            problems.append(f"header.collective.backend: {transfer.backend!r} is not one this replica takes ({takes})")
        host, _, port = transfer.store_address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"header.collective.store_address: {transfer.store_address!r} is not host:port")
        if not transfer.session:
            problems.append("header.collective.session: required, unique per transfer")
        if not 0 < transfer.timeout_seconds <= MAX_TRANSFER_TIMEOUT_SECONDS:
            problems.append(
                f"header.collective.timeout_seconds: {transfer.timeout_seconds:g} must be in "
                f"(0, {MAX_TRANSFER_TIMEOUT_SECONDS}]"
            )
        if problems:
            raise InvalidRequest("; ".join(problems))

    async def _update_from_file(self, header: UpdateHeader, chunks: AsyncIterator[Chunk], started: float):
        """Check a safetensors file inside the weights directory, then apply it. An
        adapter is copied into the staging directory first: the service serves from its
        own copy, whatever the client later does with the file."""
        async for _ in chunks:
            raise InvalidRequest("chunk: no chunks may follow a header with safetensors_path")
        path = resolve_weights_path(header.safetensors_path or "", self.settings.weights_dir)
        staged = None if header.lora is None else self._staging_path(header)
        try:
            if staged is not None:
                await asyncio.to_thread(_copy, path, staged)
                path = staged
            specs = await asyncio.to_thread(read_safetensors_specs, path)
            modules = self._check_tensors(specs, header.lora, "header.safetensors_path")
            received = time.perf_counter() - started
            total = sum(spec.size_bytes for spec in specs)
            return await self._apply(header, path, modules, len(specs), total, received)
        finally:
            if staged is not None:  # never the client's file
                await asyncio.to_thread(self._discard_unless_served, staged)

    def _check_version(self, version: int) -> None:
        if version == self.version and self._applied is not None:
            raise InvalidRequest(
                f"header.version: version {version} is already applied with another manifest; "
                "a new update needs a version above it"
            )
        if version <= self.version:
            raise InvalidRequest(f"header.version: {version} is not above the current version {self.version}")

    def _repeat(self, result: UpdateResult) -> UpdateResult:
        """The answer to an update that is already applied: OK, nothing received or changed."""
        log.info("weights update repeated; already applied", extra={"version": result.version})
        return dataclasses.replace(result, receive_seconds=0.0, apply_seconds=0.0, aborted_requests=0)

    def _check_base_version(self, lora: LoraAdapter) -> None:
        if lora.base_version is not None and lora.base_version != self.base_version:
            raise WeightsRejected(
                f"header.lora.base_version: the adapter goes on full weights version {lora.base_version}, "
                f"but this replica holds full weights version {self.base_version} (it restarted or other "
                "weights arrived); send those full weights first"
            )

    async def _apply(
        self,
        header: UpdateHeader,
        path: pathlib.Path | None,
        modules: list[str],
        count: int,
        total: int,
        received: float,
        session: str = "",
    ) -> UpdateResult:
        """Apply the staged file at `path`, or (`session`) what the workers received."""
        version, lora = header.version, header.lora
        if lora is not None:
            assert path is not None
            await asyncio.to_thread(write_adapter_config, path.parent, lora, modules)
        async with self._lock:
            self._check_serving()
            if self._applied is not None and self._applied[0] == _fingerprint(header):
                return self._repeat(self._applied[1])  # a retry received while the first attempt applied
            self._check_version(version)  # another update may have landed meanwhile
            if lora is not None:
                self._check_base_version(lora)
            previous = self.version
            started = time.perf_counter()
            try:
                if session:
                    aborted = await self.engine.swap_received_weights(session, str(version))
                elif lora is None:
                    aborted = await self.engine.swap_weights(
                        str(path), shapes_by_name(self.model.tensors), str(version)
                    )
                else:
                    assert path is not None
                    aborted = await self.engine.swap_lora(str(path.parent), str(version))
            except WeightsNotApplied as exc:
                what = "weights" if lora is None else "adapter"
                raise WeightsRejected(
                    f"the engine refused the {what} (version {previous} keeps serving): {exc}"
                ) from None
            except Exception as exc:
                # The engine failed while copying weights: they may be half applied, so
                # this replica must not serve samples under either version.
                reason = f"applying weights version {version} failed in the engine: {exc}"
                await self._stop_serving(reason)
                raise WeightsRejected(reason + "; the service stopped serving and must be restarted") from exc
            applied = time.perf_counter() - started
            self.version = version
            if lora is None:
                self.base_version = version
            else:
                lora = dataclasses.replace(lora, base_version=self.base_version)
            # An adapter replaces the previous one; full weights replace both.
            retired, self._adapter = self._adapter, None if lora is None else _ServedAdapter(lora, path.parent)  # type: ignore[union-attr]
            result = UpdateResult(version, previous, count, total, received, applied, aborted)
            self._applied = (_fingerprint(header), result)
        if retired is not None:
            await asyncio.to_thread(shutil.rmtree, retired.directory, True)
        metrics.POLICY_VERSION.set(version)
        metrics.LORA_RANK.set(0 if lora is None else lora.rank)
        metrics.WEIGHT_UPDATE_BYTES.inc(total)
        log.info(
            "weights updated",
            extra={
                "version": version,
                "previous_version": previous,
                "bytes": total,
                "apply_seconds": applied,
                "lora_rank": 0 if lora is None else lora.rank,
            },
        )
        return result


def _fingerprint(header: UpdateHeader) -> tuple:
    """What makes two updates the same: version, manifest (names, dtypes, shapes and
    checksums) or file path, and adapter."""
    return (header.version, header.tensors, header.checksum_algorithm, header.safetensors_path, header.lora)


def _copy(source: pathlib.Path, target: pathlib.Path) -> None:
    """Copy a client's file to `target` (in a new directory); InvalidRequest if unreadable."""
    target.parent.mkdir(parents=True)
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise InvalidRequest(f"header.safetensors_path: cannot read {str(source)!r}: {exc}") from None


@contextlib.contextmanager
def _count_failure():
    try:
        yield
    except InvalidRequest:
        metrics.WEIGHT_UPDATE_FAILURES.labels("invalid").inc()
        raise
    except WeightsRejected:
        metrics.WEIGHT_UPDATE_FAILURES.labels("engine").inc()
        raise
    except NotReady:
        metrics.WEIGHT_UPDATE_FAILURES.labels("not_ready").inc()
        raise
    except TransferFailed:
        metrics.WEIGHT_UPDATE_FAILURES.labels("transfer").inc()
        raise
