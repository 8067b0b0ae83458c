"""Plain domain types of the rollout service and the errors its core raises.

The servicer turns protobuf into these and back; the core and the engine never see
protobuf. Each error class maps to one gRPC status code (in the servicer).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]
EpisodeEnd = Literal["answer", "max_turns", "length", "abort", "timeout"]


class RolloutError(Exception):
    """Base of the errors the core reports to clients."""


class InvalidRequest(RolloutError):
    """The request breaks the contract or a configured limit (INVALID_ARGUMENT).
    The message names the field or limit and what was expected."""


class NotReady(RolloutError):
    """The engine is not ready to serve, or stopped serving (UNAVAILABLE)."""


class WeightsRejected(RolloutError):
    """The engine refused weights that passed validation (FAILED_PRECONDITION)."""


class TransferFailed(RolloutError):
    """A collective weight transfer broke on the way; nothing changed, and the sender
    may try again (UNAVAILABLE)."""


class ToolsUnavailable(RolloutError):
    """A service the episode's tools need (the grader of Python tools) could not answer
    (UNAVAILABLE: retry later)."""


@dataclasses.dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclasses.dataclass(frozen=True)
class PromptInput:
    """One prompt as the client gave it: exactly one of the three is set."""

    chat: tuple[ChatMessage, ...] | None = None
    token_ids: tuple[int, ...] | None = None
    text: str | None = None


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Sampling settings of a request, with the contract's defaults not yet applied
    (None / 0 mean "unset")."""

    n: int = 0
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """One engine request: one sample of one prompt, with every default resolved."""

    prompt_token_ids: list[int]
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    stop: tuple[str, ...]
    stop_token_ids: tuple[int, ...]
    seed: int | None


@dataclasses.dataclass
class EngineSample:
    """What the engine produced for one SampleRequest."""

    # None when the engine left decoding to the caller (no stop strings to watch).
    text: str | None
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    # Weight version label of every token (None when no token was produced).
    weight_version: str | None
    # Seconds from submission to the engine request's first token (set on one sample
    # per engine request; None otherwise or when no token was produced).
    time_to_first_token: float | None


@dataclasses.dataclass(frozen=True)
class EpisodeParams:
    """A request's episode settings: at most `max_turns` model turns, calling the tools
    of the named tool servers."""

    max_turns: int
    tool_servers: tuple[str, ...]
    tenant: str = "default"
    """The tenant the episode acts for; it may use only the servers that allow it."""
    python_tools_source: str = ""
    """Python tools: a module whose public functions the grader runs as tools (grader_python)."""


@dataclasses.dataclass
class ToolCallRecord:
    """One tool call of an episode and what the model was shown."""

    id: str
    turn: int
    name: str
    arguments_json: str
    output: str
    is_error: bool
    latency_seconds: float


@dataclasses.dataclass
class EpisodeMessage:
    """An assistant turn (its text without tool-call blocks) or a tool result."""

    role: str
    content: str
    tool_call_ids: tuple[str, ...] = ()


@dataclasses.dataclass
class EpisodeOutcome:
    """The multi-turn part of a sample: `token_mask[i]` is 1 where the model sampled
    the sample's token i and 0 where the service inserted it."""

    token_mask: list[int]
    turns: int
    end: EpisodeEnd
    tool_calls: list[ToolCallRecord]
    messages: list[EpisodeMessage]
    final_text: str


@dataclasses.dataclass
class Sample:
    prompt_index: int
    sample_index: int
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    policy_version: int
    episode: EpisodeOutcome | None = None


@dataclasses.dataclass
class PromptResult:
    prompt_index: int
    prompt_token_ids: list[int]
    samples: list[Sample]


@dataclasses.dataclass
class GenerateResult:
    results: list[PromptResult]
    prompt_tokens: int
    completion_tokens: int


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One named tensor. `dtype` is a torch dtype name ("float32"); `checksum` is
    empty when none was sent."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    size_bytes: int
    checksum: str = ""


@dataclasses.dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter's shape: every A is [rank, in], every B [out, rank], and the
    adapter adds (alpha / rank) * B @ A to each adapted weight. `base_version`: the
    full weights' version it goes on top of (None in an update: any)."""

    rank: int
    alpha: float
    base_version: int | None = None


@dataclasses.dataclass(frozen=True)
class UpdateHeader:
    """The first message of a weight update: the new version and either a manifest
    (`tensors` + `checksum_algorithm`: "none", "crc32", "sha256" or an unknown name
    as received) or the path of a safetensors file; neither when the client sent none.
    With `collective` the manifest's tensors arrive over torch.distributed instead of
    chunks. `lora` is set when the tensors are a LoRA adapter instead of the whole
    state dict."""

    version: int
    tensors: tuple[TensorSpec, ...] | None = None
    checksum_algorithm: str = "none"
    safetensors_path: str | None = None
    lora: LoraAdapter | None = None
    collective: CollectiveTransfer | None = None


@dataclasses.dataclass(frozen=True)
class CollectiveTransfer:
    """Where a collective update's tensors come from (rft.rollout.v1.CollectiveWeights)."""

    store_address: str
    session: str
    backend: str
    timeout_seconds: float


@dataclasses.dataclass(frozen=True)
class Limits:
    max_prompts: int
    max_n: int
    max_tokens: int
    max_prompt_tokens: int
    max_episode_turns: int = 16
    max_tool_calls_per_turn: int = 8
    max_tool_calls_per_episode: int = 32
    episode_timeout_seconds: float = 300.0


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    model: str
    architecture: str
    num_parameters: int
    vocab_size: int
    max_model_len: int
    dtype: str
    policy_version: int
    tensors: tuple[TensorSpec, ...]
    limits: Limits
    engine: str
    eos_token_id: int
    max_lora_rank: int  # 0: adapter updates are refused
    lora: LoraAdapter | None  # the adapter serving on top of the weights, if any
    tool_servers: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (name, kind, tool names)
    collective_backends: tuple[str, ...] = ()
    weight_receivers: int = 1


@dataclasses.dataclass(frozen=True)
class UpdateResult:
    version: int
    previous_version: int
    tensor_count: int
    total_bytes: int
    receive_seconds: float
    apply_seconds: float
    aborted_requests: int
