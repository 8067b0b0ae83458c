"""rft.rollout.v1.RolloutService over gRPC: protobuf <-> domain types, and domain
errors -> status codes in one place (`_status_for`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_common import dtypes
from rft_common.tenancy import CALLER, TenantDenied, acting_tenant
from rft_common.weights import CHECKSUM_ALGORITHMS

from rft_rollout.core import RolloutCore
from rft_rollout.domain import (
    ChatMessage,
    CollectiveTransfer,
    EpisodeOutcome,
    EpisodeParams,
    InvalidRequest,
    LoraAdapter,
    ModelInfo,
    NotReady,
    PromptInput,
    RolloutError,
    Sample,
    Sampling,
    TensorSpec,
    ToolsUnavailable,
    TransferFailed,
    UpdateHeader,
    UpdateResult,
    WeightsRejected,
)
from rft_rollout.updates import Chunk

SERVICE_NAME = rollout_pb2.DESCRIPTOR.services_by_name["RolloutService"].full_name

FINISH_REASONS = {
    "stop": rollout_pb2.FINISH_REASON_STOP,
    "length": rollout_pb2.FINISH_REASON_LENGTH,
    "abort": rollout_pb2.FINISH_REASON_ABORT,
}
EPISODE_ENDS = {
    "answer": rollout_pb2.EPISODE_END_ANSWER,
    "max_turns": rollout_pb2.EPISODE_END_MAX_TURNS,
    "length": rollout_pb2.EPISODE_END_LENGTH,
    "abort": rollout_pb2.EPISODE_END_ABORT,
    "timeout": rollout_pb2.EPISODE_END_TIMEOUT,
}
CHECKSUMS: dict[int, str] = {value: name for name, value in CHECKSUM_ALGORITHMS.items()}


def _status_for(error: RolloutError) -> grpc.StatusCode:
    if isinstance(error, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, (NotReady, ToolsUnavailable, TransferFailed)):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, WeightsRejected):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


@contextlib.asynccontextmanager
async def _errors_to_status(context: grpc.aio.ServicerContext):
    try:
        yield
    except RolloutError as error:
        await context.abort(_status_for(error), str(error))
    except TenantDenied as error:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))


# -- protobuf -> domain --------------------------------------------------------------


def prompt_from_proto(prompt: rollout_pb2.Prompt) -> PromptInput:
    kind = prompt.WhichOneof("input")
    if kind == "chat":
        return PromptInput(chat=tuple(ChatMessage(m.role, m.content) for m in prompt.chat.messages))
    if kind == "token_ids":
        return PromptInput(token_ids=tuple(prompt.token_ids.ids))
    if kind == "text":
        return PromptInput(text=prompt.text)
    return PromptInput()


def sampling_from_proto(params: rollout_pb2.SamplingParams) -> Sampling:
    return Sampling(
        n=params.n,
        temperature=params.temperature if params.HasField("temperature") else None,
        top_p=params.top_p if params.HasField("top_p") else None,
        top_k=params.top_k if params.HasField("top_k") else None,
        max_tokens=params.max_tokens,
        stop=tuple(params.stop),
        stop_token_ids=tuple(params.stop_token_ids),
        seed=params.seed if params.HasField("seed") else None,
    )


def episode_from_proto(request) -> EpisodeParams | None:
    """The request's episode settings (max_turns 0 means 1); None when it has none."""
    if not request.HasField("episode"):
        return None
    # A tenant's credential acts for itself only (TenantDenied otherwise); the operator's
    # (the learner's) for the tenant it names.
    tenant = acting_tenant(request.episode.tenant)
    episode = request.episode
    return EpisodeParams(episode.max_turns or 1, tuple(episode.tool_servers), tenant, episode.python_tools_source)


def tensor_spec_from_proto(spec: rollout_pb2.TensorSpec) -> TensorSpec:
    return TensorSpec(spec.name, dtypes.from_proto(spec.dtype), tuple(spec.shape), spec.size_bytes, spec.checksum)


def header_from_proto(first: rollout_pb2.UpdateWeightsRequest | None) -> UpdateHeader | None:
    if first is None or first.WhichOneof("message") != "header":
        return None
    header = first.header
    lora = None
    if header.HasField("lora"):
        base_version = header.lora.base_version if header.lora.HasField("base_version") else None
        lora = LoraAdapter(header.lora.rank, header.lora.alpha, base_version)
    source = header.WhichOneof("source")
    if source in ("manifest", "collective"):
        manifest = header.manifest if source == "manifest" else header.collective.manifest
        collective = None
        if source == "collective":
            c = header.collective
            collective = CollectiveTransfer(c.store_address, c.session, c.backend, c.timeout_seconds)
        return UpdateHeader(
            version=header.version,
            tensors=tuple(tensor_spec_from_proto(spec) for spec in manifest.tensors),
            checksum_algorithm=CHECKSUMS.get(manifest.checksum_algorithm, str(manifest.checksum_algorithm)),
            lora=lora,
            collective=collective,
        )
    if source == "safetensors_path":
        return UpdateHeader(version=header.version, safetensors_path=header.safetensors_path, lora=lora)
    return UpdateHeader(version=header.version, lora=lora)


async def _chunks(requests: AsyncIterator[rollout_pb2.UpdateWeightsRequest]) -> AsyncIterator[Chunk]:
    async for request in requests:
        if request.WhichOneof("message") != "chunk":
            raise InvalidRequest("header: only the first message of an update may be a header; the rest are chunks")
        yield request.chunk.tensor_index, request.chunk.offset, request.chunk.data


# -- domain -> protobuf --------------------------------------------------------------


def episode_to_proto(outcome: EpisodeOutcome) -> rollout_pb2.Episode:
    return rollout_pb2.Episode(
        token_mask=outcome.token_mask,
        turns=outcome.turns,
        end=EPISODE_ENDS[outcome.end],
        tool_calls=[
            rollout_pb2.ToolCall(
                id=call.id,
                turn=call.turn,
                name=call.name,
                arguments_json=call.arguments_json,
                output=call.output,
                is_error=call.is_error,
                latency_seconds=call.latency_seconds,
            )
            for call in outcome.tool_calls
        ],
        messages=[
            rollout_pb2.EpisodeMessage(role=m.role, content=m.content, tool_call_ids=m.tool_call_ids)
            for m in outcome.messages
        ],
        final_text=outcome.final_text,
    )


def sample_to_proto(sample: Sample) -> rollout_pb2.Sample:
    return rollout_pb2.Sample(
        prompt_index=sample.prompt_index,
        sample_index=sample.sample_index,
        text=sample.text,
        token_ids=sample.token_ids,
        logprobs=sample.logprobs,
        finish_reason=FINISH_REASONS[sample.finish_reason],
        policy_version=sample.policy_version,
        episode=None if sample.episode is None else episode_to_proto(sample.episode),
    )


def tensor_spec_to_proto(spec: TensorSpec) -> rollout_pb2.TensorSpec:
    return rollout_pb2.TensorSpec(
        name=spec.name, dtype=dtypes.DTYPES[spec.dtype].proto, shape=spec.shape, size_bytes=spec.size_bytes
    )


def update_to_proto(result: UpdateResult) -> rollout_pb2.UpdateWeightsResponse:
    return rollout_pb2.UpdateWeightsResponse(
        version=result.version,
        previous_version=result.previous_version,
        tensor_count=result.tensor_count,
        total_bytes=result.total_bytes,
        receive_seconds=result.receive_seconds,
        apply_seconds=result.apply_seconds,
        aborted_requests=result.aborted_requests,
    )


def model_info_to_proto(info: ModelInfo) -> rollout_pb2.GetModelInfoResponse:
    limits = info.limits
    return rollout_pb2.GetModelInfoResponse(
        model=info.model,
        architecture=info.architecture,
        num_parameters=info.num_parameters,
        vocab_size=info.vocab_size,
        max_model_len=info.max_model_len,
        dtype=info.dtype,
        policy_version=info.policy_version,
        tensors=[tensor_spec_to_proto(spec) for spec in info.tensors],
        limits=rollout_pb2.RequestLimits(
            max_prompts=limits.max_prompts,
            max_n=limits.max_n,
            max_tokens=limits.max_tokens,
            max_prompt_tokens=limits.max_prompt_tokens,
            max_episode_turns=limits.max_episode_turns,
            max_tool_calls_per_turn=limits.max_tool_calls_per_turn,
            max_tool_calls_per_episode=limits.max_tool_calls_per_episode,
            episode_timeout_seconds=limits.episode_timeout_seconds,
        ),
        engine=info.engine,
        eos_token_id=info.eos_token_id,
        max_lora_rank=info.max_lora_rank,
        lora=None
        if info.lora is None
        else rollout_pb2.LoraAdapter(rank=info.lora.rank, alpha=info.lora.alpha, base_version=info.lora.base_version),
        tool_servers=[
            rollout_pb2.ToolServer(name=name, kind=kind, tools=tools) for name, kind, tools in info.tool_servers
        ],
        collective_backends=info.collective_backends,
        weight_receivers=info.weight_receivers,
    )


class RolloutServicer(rollout_pb2_grpc.RolloutServiceServicer):
    """Thin: every method converts, calls the core, converts back. `core` is None
    until the engine is ready, and every RPC is UNAVAILABLE until then."""

    def __init__(self) -> None:
        self.core: RolloutCore | None = None

    def _core(self) -> RolloutCore:
        if self.core is None:
            raise NotReady("the inference engine is starting; retry when health reports SERVING")
        return self.core

    async def Generate(self, request, context):
        async with _errors_to_status(context):
            result = await self._core().generate(
                [prompt_from_proto(p) for p in request.prompts],
                sampling_from_proto(request.sampling),
                request.request_id,
                episode_from_proto(request),
            )
            return rollout_pb2.GenerateResponse(
                results=[
                    rollout_pb2.PromptResult(
                        prompt_index=r.prompt_index,
                        prompt_token_ids=r.prompt_token_ids,
                        samples=[sample_to_proto(s) for s in r.samples],
                    )
                    for r in result.results
                ],
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
            )

    async def StreamGenerate(self, request, context):
        async with _errors_to_status(context):
            samples = self._core().stream_generate(
                [prompt_from_proto(p) for p in request.prompts],
                sampling_from_proto(request.sampling),
                request.request_id,
                episode_from_proto(request),
            )
            try:
                async for sample, prompt_ids in samples:
                    yield rollout_pb2.StreamGenerateResponse(
                        sample=sample_to_proto(sample), prompt_token_ids=prompt_ids
                    )
            finally:
                await samples.aclose()  # aborts unfinished samples when the client went away

    async def UpdateWeights(self, request_iterator, context):
        async with _errors_to_status(context):
            core = self._core()
            requests = request_iterator.__aiter__()
            first = await anext(requests, None)
            result = await core.update_weights(header_from_proto(first), _chunks(requests))
            return update_to_proto(result)

    async def GetModelInfo(self, request, context):
        async with _errors_to_status(context):
            # The operator without a tenant sees every tool server; anyone else only those
            # the tenant may use, so no tenant learns which servers other tenants have.
            tenant = None if CALLER.get().operator and not request.tenant else acting_tenant(request.tenant)
            return model_info_to_proto(self._core().model_info(tenant))
