"""Clients of the rollout replicas and the grader service, as the trainer sees them.

Transient failures (a replica or the grader restarting) are retried with backoff for
up to `patience_seconds`; a rollout replica that comes back with fresh weights is
detected by its policy version and receives the current weights again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2
from rft.common.v1 import common_pb2
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_common.client import FOREIGN_PINGS_WITHOUT_DATA, aio_channel
from rft_common.episodes import episode_sample_output, sample_output

from rft_learner.weight_sync import (
    STREAM,
    CollectiveTransfer,
    PushPlan,
    TensorSource,
    TransferError,
    WeightSyncSettings,
    pick_backend,
    served_dtypes,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
MAX_MESSAGE_BYTES = 256 << 20


class RemoteError(Exception):
    """A remote service failed in a way retries did not fix."""


def is_transient(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() in TRANSIENT


def is_transient_for_a_stream(exc: grpc.aio.AioRpcError) -> bool:
    """Also true for the status grpc.aio makes up when the peer ends a call while the
    client is still writing its stream (a replica dying mid-push): INTERNAL, "Internal
    error from Core", in place of the peer's own status. A retry tells which it was."""
    return is_transient(exc) or (exc.code() == grpc.StatusCode.INTERNAL and exc.details() == "Internal error from Core")


def is_transient_for_a_transfer(exc: grpc.aio.AioRpcError) -> bool:
    """A collective push's call: as a stream's, but a missed deadline is not retried. The
    deadline already grows with the model, and a retry would send all of it again."""
    return is_transient_for_a_stream(exc) and exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    what: str,
    patience_seconds: float,
    on_retry: Callable[[str], None] | None = None,
    transient: Callable[[grpc.aio.AioRpcError], bool] = is_transient,
) -> T:
    """Run `call`, retrying transient gRPC failures with exponential backoff."""
    deadline = time.monotonic() + patience_seconds
    delay = 0.5
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise RemoteError(f"{what} failed: {exc.code().name}: {exc.details()}") from exc
            message = f"{what}: {exc.code().name}, retrying in {delay:.1f}s"
            log.warning(message)
            if on_retry:
                on_retry(message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _in_own_thread(function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run `function(*args)` in a new thread; its result or exception in a future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="rft-weights-broadcast", daemon=True).start()
    return future


def resolve_addresses(spec: str) -> list[str]:
    """Replica addresses from 'host:port,host:port' or 'dns:///name:port' (every A record)."""
    addresses: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part.startswith("dns:///"):
            host, port = part[len("dns:///") :].rsplit(":", 1)
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            addresses.extend(sorted({f"{info[4][0]}:{port}" for info in infos}))
        else:
            addresses.append(part)
    if not addresses:
        raise ValueError(f"no rollout addresses in {spec!r}")
    return addresses


@dataclasses.dataclass
class GeneratedSample:
    prompt_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: int
    policy_version: int
    episode: rollout_pb2.Episode | None = None
    """Set for a multi-turn episode: token_ids is then the whole trajectory and
    episode.token_mask marks the sampled tokens (1) among the tool-result ones (0)."""

    @property
    def token_mask(self) -> list[int] | None:
        return list(self.episode.token_mask) if self.episode is not None else None


@dataclasses.dataclass
class GeneratedPrompt:
    prompt_token_ids: list[int]
    samples: list[GeneratedSample]


class RolloutPool:
    """All rollout replicas of a job: prompts are split across them, weights go to all."""

    def __init__(
        self,
        addresses: list[str],
        token: str = "",
        tls_ca_file: str = "",
        patience_seconds: float = 600,
        weight_sync: WeightSyncSettings = STREAM,
        trainer_on_cuda: bool = False,
    ):
        self.addresses = addresses
        self.patience_seconds = patience_seconds
        self.weight_sync = weight_sync
        self._trainer_on_cuda = trainer_on_cuda
        # No retries inside gRPC: every call here goes through retry_transient, and gRPC's
        # retry machinery wedged a weight push for good when a replica died mid-stream.
        self._channels = [
            aio_channel(a, token=token, tls_ca_file=tls_ca_file, max_message_bytes=MAX_MESSAGE_BYTES, retries=False)
            for a in addresses
        ]
        self._stubs = [rollout_pb2_grpc.RolloutServiceStub(c) for c in self._channels]
        self.version = 0
        self._weights_source: TensorSource | None = None
        self._base_source: TensorSource | None = None
        self._lora: rollout_pb2.LoraAdapter | None = None
        self._one_read_at_a_time = False
        # Per replica, the version at which it took the LoRA base; None: it needs it.
        self._base_versions: list[int | None] = [None] * len(addresses)
        # One weight push per replica at a time: all of a replica's in-flight requests
        # notice a restart together, and the replica must get the weights once.
        self._push_locks = [asyncio.Lock() for _ in addresses]
        self.on_retry: Callable[[str], None] | None = None
        # Held by the trainer while it changes the weights: a replica that must get them
        # again waits, rather than reading tensors half-way through an optimizer step.
        self.weights_guard = asyncio.Lock()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    async def model_info(self, tenant: str = "") -> list[rollout_pb2.GetModelInfoResponse]:
        """Every replica's GetModelInfo; with `tenant`, listing the tool servers it may use."""
        return list(await asyncio.gather(*(self._model_info(i, tenant) for i in range(len(self._stubs)))))

    async def _model_info(self, index: int, tenant: str = "") -> rollout_pb2.GetModelInfoResponse:
        return await retry_transient(
            lambda: self._stubs[index].GetModelInfo(rollout_pb2.GetModelInfoRequest(tenant=tenant), timeout=30),
            f"rollout {self.addresses[index]} GetModelInfo",
            self.patience_seconds,
            self.on_retry,
        )

    def set_weights_source(
        self,
        source: TensorSource,
        base_source: TensorSource | None = None,
        lora: rollout_pb2.LoraAdapter | None = None,
        one_read_at_a_time: bool = False,
    ) -> None:
        """Where to read the current weights from when a replica needs them again.

        With `lora`, `source` gives only the adapter and `base_source` the frozen base
        it applies to: a replica gets the base once (and again if it restarts), then
        only adapters.

        `one_read_at_a_time`: each read of `source` is a pass of collectives over the
        trainer ranks (FSDP shards, ranks.Updater.streamed_weights) and the passes run one
        after another; a push then streams to the replicas in turn, so that no replica's
        call stands open (its deadline running) while it waits for another's pass.
        """
        assert (base_source is None) == (lora is None), "a LoRA policy needs its base"
        self._weights_source, self._base_source, self._lora = source, base_source, lora
        self._one_read_at_a_time = one_read_at_a_time
        self._base_versions = [None] * len(self._stubs)

    async def push_weights(self) -> float:
        """Send the current weights to every replica as a new version; returns seconds."""
        assert self._weights_source is not None
        started = time.perf_counter()
        infos = await self.model_info()
        plan = await self._plan(self._weights_source, infos, full=self._lora is None)
        latest = max([self.version, *(i.policy_version for i in infos)])
        # A replica that still needs the LoRA base takes it as version - 1.
        needs_base = self._lora is not None and None in self._base_versions
        self.version = latest + (2 if needs_base else 1)
        if self._one_read_at_a_time:
            for index in range(len(self._stubs)):
                await self._push_one(index, plan)
        else:
            await asyncio.gather(*(self._push_one(i, plan) for i in range(len(self._stubs))))
        return time.perf_counter() - started

    async def _plan(
        self, source: TensorSource, infos: Sequence[rollout_pb2.GetModelInfoResponse], full: bool = True
    ) -> PushPlan:
        """A push of `source`'s tensors in the dtypes the replicas serve, checksummed once
        for a stream. Full weights sent collectively carry no checksums: gloo rides on
        TCP's, NCCL's receivers are GPUs, and the pass would cost a read of the model."""
        served = [served_dtypes(info) for info in infos]
        if any(s != served[0] for s in served[1:]) or len({info.dtype for info in infos}) > 1:
            listing = ", ".join(f"{a} serves {info.dtype}" for a, info in zip(self.addresses, infos, strict=True))
            raise RemoteError(
                f"the rollout replicas serve different dtypes ({listing}); start them with the same --dtype"
            )
        plan = PushPlan(source, served[0], infos[0].dtype)
        await plan.prepare("none" if full and self.weight_sync.mode == "collective" else "crc32")
        return plan

    async def _push_one(self, index: int, plan: PushPlan) -> None:
        async with self._push_locks[index]:
            await self._bring_to_version(index, plan)

    async def _bring_to_version(self, index: int, plan: PushPlan) -> None:
        """Bring replica `index` to `self.version`: the weights, or its base and the adapter.
        The caller holds the replica's push lock."""
        if self._lora is None:
            await self._update(index, self.version, plan, None)
            return
        if self._base_versions[index] is None:
            await self._push_base(index)
        try:
            await self._update(index, self.version, plan, self._adapter_header(index))
        except RemoteError:
            # The replica refuses an adapter for a base it no longer holds: it restarted
            # after taking the base (the adapter names it in base_version).
            if not await self._lost_base(index):
                raise
            if self.on_retry:
                self.on_retry(f"rollout {self.addresses[index]} lost the LoRA base; re-sending it")
            await self._push_base(index)
            await self._update(index, self.version, plan, self._adapter_header(index))

    async def _push_base(self, index: int) -> None:
        assert self._base_source is not None
        plan = await self._plan(self._base_source, [await self._model_info(index)])
        await self._update(index, self.version - 1, plan, None)
        self._base_versions[index] = self.version - 1

    def _adapter_header(self, index: int) -> rollout_pb2.LoraAdapter:
        header = rollout_pb2.LoraAdapter()
        header.CopyFrom(self._lora)
        header.base_version = self._base_versions[index]
        return header

    async def _lost_base(self, index: int) -> bool:
        """Replica `index` holds other full weights than the base it took, and the base
        can go to it again at version - 1."""
        info = await self._model_info(index)
        held = info.lora.base_version if info.HasField("lora") else info.policy_version
        return held != self._base_versions[index] and info.policy_version < self.version - 1

    async def _resend(self, index: int, served: set[int]) -> None:
        """Replica `index` answered with versions `served`, not ours: it restarted and lost
        the weights. Send them again unless a concurrent request already did."""
        async with self._push_locks[index]:
            info = await self._model_info(index)
            if info.policy_version == self.version:
                return
            if self.on_retry:
                self.on_retry(
                    f"rollout {self.addresses[index]} served version {sorted(served)} "
                    f"(expected {self.version}); re-sending weights"
                )
            self._base_versions[index] = None  # it restarted from its model directory
            assert self._weights_source is not None
            async with self.weights_guard:
                plan = await self._plan(self._weights_source, [info], full=self._lora is None)
                await self._bring_to_version(index, plan)

    async def _update(self, index: int, version: int, plan: PushPlan, lora: rollout_pb2.LoraAdapter | None) -> None:
        """One UpdateWeights call, retried on transient errors: the rollout answers a
        repeat of the update it applied last with OK, so a lost reply costs a resend."""
        if self.weight_sync.mode == "collective" and lora is None:  # adapters are small: always streamed
            await self._update_collective(index, version, plan)
            return
        stub = self._stubs[index]
        what = f"rollout {self.addresses[index]} UpdateWeights"

        async def call():
            failures: list[Exception] = []
            reading = plan.reading()

            async def requests():
                try:
                    async with contextlib.aclosing(plan.requests(version, lora, reading)) as stream:
                        async for request in stream:
                            yield request
                except Exception as exc:
                    failures.append(exc)
                    raise

            try:
                return await stub.UpdateWeights(requests(), timeout=600)
            except asyncio.CancelledError:
                # grpc.aio cancels the call when the request stream raises: report why.
                if failures:
                    raise RemoteError(f"{what} failed while sending: {failures[0]}") from failures[0]
                raise
            finally:
                # gRPC leaves a stream it stopped reading to the garbage collector. A sharded
                # read holds every trainer rank until it is closed, so close it now, before a
                # retry starts the next one (waiting for a read in progress, in a thread).
                await asyncio.to_thread(reading.close)

        await retry_transient(call, what, self.patience_seconds, self.on_retry, is_transient_for_a_stream)

    async def _update_collective(self, index: int, version: int, plan: PushPlan) -> None:
        """One UpdateWeights call that carries the manifest while the tensors go over a
        torch.distributed broadcast to the replica's workers; each attempt its own group.

        The broadcast runs in a thread of its own (it may take minutes, and one per
        replica at a time would starve asyncio's shared pool). A cancelled push stops it
        between tensors and waits for it, so its read of the weights is closed first."""
        stub, address = self._stubs[index], self.addresses[index]
        what = f"rollout {address} UpdateWeights (collective)"
        settings = self.weight_sync
        # The call spans the rendezvous, the whole broadcast and the apply: its deadline
        # grows with the model (at least 50 MB/s), and a missed one is not retried.
        deadline = 600 + plan.total_bytes / 50e6

        async def call():
            info = await self._model_info(index)
            try:
                backend = pick_backend(settings.backend, info.collective_backends, self._trainer_on_cuda)
            except ValueError as exc:
                raise RemoteError(f"{what}: {exc}") from None
            transfer = await asyncio.to_thread(
                CollectiveTransfer, settings, plan, address, backend, info.weight_receivers
            )
            request = rollout_pb2.UpdateWeightsRequest(header=transfer.header(version))
            ended, stop = threading.Event(), threading.Event()
            reply = asyncio.ensure_future(stub.UpdateWeights(iter([request]), timeout=deadline))
            reply.add_done_callback(lambda _: ended.set())
            sending = _in_own_thread(transfer.send, ended, stop)
            try:
                await asyncio.shield(sending)
            except TransferError as exc:
                # The replica's end failed too, or will: its status says whether to retry.
                try:
                    await asyncio.wait_for(asyncio.shield(reply), settings.timeout_seconds)
                except grpc.aio.AioRpcError:
                    raise
                except Exception:
                    reply.cancel()
                raise RemoteError(f"{what} failed while broadcasting: {exc}") from exc
            except BaseException as exc:
                stop.set()
                reply.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.shield(sending)
                if isinstance(exc, Exception) and not isinstance(exc, asyncio.CancelledError):
                    raise RemoteError(f"{what} failed: {exc}") from exc
                raise
            return await reply

        await retry_transient(call, what, self.patience_seconds, self.on_retry, is_transient_for_a_transfer)

    async def generate(
        self,
        prompts: Sequence[list[dict[str, Any]]],
        sampling: rollout_pb2.SamplingParams,
        seeds: Sequence[int] | None = None,
        episode: rollout_pb2.EpisodeParams | None = None,
    ) -> list[GeneratedPrompt]:
        """Samples for every prompt (chat messages), all from `self.version`; with
        `episode`, each sample is a multi-turn, tool-using episode.

        Prompts are spread over the replicas. A replica that answers with another
        version (it restarted and lost our weights) gets the weights again and the
        prompts are re-sent.
        """
        shards: list[list[int]] = [[] for _ in self._stubs]
        for index in range(len(prompts)):
            shards[index % len(self._stubs)].append(index)
        results: list[GeneratedPrompt | None] = [None] * len(prompts)

        async def run_shard(replica: int, indices: list[int]) -> None:
            if not indices:
                return

            # One request per prompt so each can carry its own seed; the engine batches them.
            async def one(index: int) -> None:
                params = rollout_pb2.SamplingParams()
                params.CopyFrom(sampling)
                if seeds is not None:
                    params.seed = seeds[index]
                request = rollout_pb2.GenerateRequest(
                    prompts=[rollout_pb2.Prompt(chat=rollout_pb2.ChatPrompt(messages=_messages(prompts[index])))],
                    sampling=params,
                    episode=episode,
                )
                for _attempt in range(3):
                    response = await retry_transient(
                        lambda: self._stubs[replica].Generate(request, timeout=600),
                        f"rollout {self.addresses[replica]} Generate",
                        self.patience_seconds,
                        self.on_retry,
                    )
                    result = response.results[0]
                    versions = {s.policy_version for s in result.samples}
                    aborted = any(s.finish_reason == rollout_pb2.FINISH_REASON_ABORT for s in result.samples)
                    if versions == {self.version} and not aborted:
                        results[index] = GeneratedPrompt(
                            list(result.prompt_token_ids),
                            [
                                GeneratedSample(
                                    index,
                                    s.text,
                                    list(s.token_ids),
                                    list(s.logprobs),
                                    s.finish_reason,
                                    s.policy_version,
                                    s.episode if s.HasField("episode") else None,
                                )
                                for s in result.samples
                            ],
                        )
                        return
                    if versions != {self.version}:
                        await self._resend(replica, versions)
                raise RemoteError(f"rollout {self.addresses[replica]} keeps serving the wrong policy version")

            await asyncio.gather(*(one(i) for i in indices))

        await asyncio.gather(*(run_shard(r, idx) for r, idx in enumerate(shards)))
        return results  # type: ignore[return-value]


def _messages(messages: list[dict[str, Any]]) -> list[common_pb2.ChatMessage]:
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):  # OpenAI text parts
            content = "".join(part.get("text", "") for part in content)
        out.append(common_pb2.ChatMessage(role=message["role"], content=content))
    return out


def grader_sample(sample: GeneratedSample) -> str | grader_pb2.SampleOutput:
    """What the grader sees of a sample: its text, and for an episode the tool calls
    (sample.output_tools, OpenAI's chat-completions format plus output and is_error)
    and messages (sample.output_messages): rft_common.episodes, shared with `rft evals
    run` and the HTTP API's evaluation runs."""
    if sample.episode is None:
        return sample.text
    return episode_sample_output(sample.text, sample.episode)


def stand_in_episode_sample() -> grader_pb2.SampleOutput:
    """An empty episode with one successful call, for dry runs of a tool-using job's
    grader: templates such as {{sample.output_tools.0.function.name}} resolve on it."""
    episode = rollout_pb2.Episode(
        tool_calls=[rollout_pb2.ToolCall(id="call_0", name="", arguments_json="{}")],
        messages=[
            rollout_pb2.EpisodeMessage(role="assistant", tool_call_ids=["call_0"]),
            rollout_pb2.EpisodeMessage(role="tool", tool_call_ids=["call_0"]),
            rollout_pb2.EpisodeMessage(role="assistant"),
        ],
    )
    return grader_sample(GeneratedSample(0, "", [], [], 0, 0, episode))


def to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


class GraderClient:
    """Grades (sample text, item) pairs with one grader through an rft.grader.v1 service."""

    BATCH = 512

    def __init__(
        self,
        address: str,
        tenant: str,
        spec: dict[str, Any] | None = None,
        grader_id: str = "",
        token: str = "",
        tls_ca_file: str = "",
        patience_seconds: float = 300,
    ) -> None:
        self.address = address
        self.tenant = tenant
        self.spec = spec
        self.grader_id = grader_id
        self.patience_seconds = patience_seconds
        # The grader may be a customer's own server, with gRPC's default ping policy.
        self._channel = aio_channel(
            address,
            token=token,
            tls_ca_file=tls_ca_file,
            max_message_bytes=MAX_MESSAGE_BYTES,
            pings_without_data=FOREIGN_PINGS_WITHOUT_DATA,
        )
        self._stub = grader_pb2_grpc.GraderServiceStub(self._channel)
        self.on_retry: Callable[[str], None] | None = None

    async def close(self) -> None:
        await self._channel.close()

    def _request(
        self, pairs: Iterable[tuple[str | grader_pb2.SampleOutput, dict[str, Any]]]
    ) -> grader_pb2.GradeRequest:
        request = grader_pb2.GradeRequest(tenant=self.tenant)
        if self.spec is not None:
            request.spec.update(self.spec)
        else:
            request.grader_id = self.grader_id
        for sample, item in pairs:
            output = sample_output(sample) if isinstance(sample, str) else sample
            request.items.append(grader_pb2.GradeItem(sample=output, item=to_struct(item)))
        return request

    async def validate(self) -> list[str]:
        """Problems with the spec ([] when valid); a registered id is checked by fetching it."""
        if self.spec is None:
            await self._stub.GetGrader(
                grader_pb2.GetGraderRequest(tenant=self.tenant, grader_id=self.grader_id), timeout=30
            )
            return []
        request = grader_pb2.ValidateGraderRequest(tenant=self.tenant, spec=to_struct(self.spec))
        response = await self._stub.ValidateGrader(request, timeout=30)
        return [f"{issue.field}: {issue.message}" if issue.field else issue.message for issue in response.issues]

    async def describe_python_tools(self, source: str) -> list[str]:
        """The names of the tools a Python tool source defines, run in the tenant's sandbox
        (grpc.aio.AioRpcError INVALID_ARGUMENT, naming the line, for a bad source)."""
        request = grader_pb2.DescribePythonToolsRequest(tenant=self.tenant, source=source)
        response = await self._stub.DescribePythonTools(request, timeout=60)
        return [tool.name for tool in response.tools]

    async def grade(
        self, pairs: Sequence[tuple[str | grader_pb2.SampleOutput, dict[str, Any]]]
    ) -> list[grader_pb2.GradeResult]:
        batches = [pairs[i : i + self.BATCH] for i in range(0, len(pairs), self.BATCH)]

        async def one(batch):
            request = self._request(batch)
            response = await retry_transient(
                lambda: self._stub.Grade(request, timeout=600), "grader Grade", self.patience_seconds, self.on_retry
            )
            if len(response.results) != len(batch):
                raise RemoteError(f"grader returned {len(response.results)} results for {len(batch)} items")
            return list(response.results)

        out: list[grader_pb2.GradeResult] = []
        for results in await asyncio.gather(*(one(b) for b in batches)):
            out.extend(results)
        return out
