from rft.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ABORT: _ClassVar[FinishReason]

class EpisodeEnd(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EPISODE_END_UNSPECIFIED: _ClassVar[EpisodeEnd]
    EPISODE_END_ANSWER: _ClassVar[EpisodeEnd]
    EPISODE_END_MAX_TURNS: _ClassVar[EpisodeEnd]
    EPISODE_END_LENGTH: _ClassVar[EpisodeEnd]
    EPISODE_END_ABORT: _ClassVar[EpisodeEnd]
    EPISODE_END_TIMEOUT: _ClassVar[EpisodeEnd]

class TensorDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TENSOR_DTYPE_UNSPECIFIED: _ClassVar[TensorDtype]
    TENSOR_DTYPE_FLOAT32: _ClassVar[TensorDtype]
    TENSOR_DTYPE_FLOAT16: _ClassVar[TensorDtype]
    TENSOR_DTYPE_BFLOAT16: _ClassVar[TensorDtype]
    TENSOR_DTYPE_FLOAT64: _ClassVar[TensorDtype]
    TENSOR_DTYPE_INT64: _ClassVar[TensorDtype]
    TENSOR_DTYPE_INT32: _ClassVar[TensorDtype]
    TENSOR_DTYPE_UINT8: _ClassVar[TensorDtype]

class ChecksumAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKSUM_ALGORITHM_UNSPECIFIED: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_CRC32: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_SHA256: _ClassVar[ChecksumAlgorithm]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ABORT: FinishReason
EPISODE_END_UNSPECIFIED: EpisodeEnd
EPISODE_END_ANSWER: EpisodeEnd
EPISODE_END_MAX_TURNS: EpisodeEnd
EPISODE_END_LENGTH: EpisodeEnd
EPISODE_END_ABORT: EpisodeEnd
EPISODE_END_TIMEOUT: EpisodeEnd
TENSOR_DTYPE_UNSPECIFIED: TensorDtype
TENSOR_DTYPE_FLOAT32: TensorDtype
TENSOR_DTYPE_FLOAT16: TensorDtype
TENSOR_DTYPE_BFLOAT16: TensorDtype
TENSOR_DTYPE_FLOAT64: TensorDtype
TENSOR_DTYPE_INT64: TensorDtype
TENSOR_DTYPE_INT32: TensorDtype
TENSOR_DTYPE_UINT8: TensorDtype
CHECKSUM_ALGORITHM_UNSPECIFIED: ChecksumAlgorithm
CHECKSUM_ALGORITHM_CRC32: ChecksumAlgorithm
CHECKSUM_ALGORITHM_SHA256: ChecksumAlgorithm

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ChatPrompt(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ...) -> None: ...

class Prompt(_message.Message):
    __slots__ = ("chat", "token_ids", "text")
    CHAT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    chat: ChatPrompt
    token_ids: TokenIds
    text: str
    def __init__(self, chat: _Optional[_Union[ChatPrompt, _Mapping]] = ..., token_ids: _Optional[_Union[TokenIds, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("n", "temperature", "top_p", "top_k", "max_tokens", "stop", "stop_token_ids", "seed")
    N_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    n: int
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    seed: int
    def __init__(self, n: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompts", "sampling", "request_id", "episode")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedCompositeFieldContainer[Prompt]
    sampling: SamplingParams
    request_id: str
    episode: EpisodeParams
    def __init__(self, prompts: _Optional[_Iterable[_Union[Prompt, _Mapping]]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., request_id: _Optional[str] = ..., episode: _Optional[_Union[EpisodeParams, _Mapping]] = ...) -> None: ...

class EpisodeParams(_message.Message):
    __slots__ = ("max_turns", "tool_servers", "tenant", "python_tools_source")
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    TOOL_SERVERS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PYTHON_TOOLS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    max_turns: int
    tool_servers: _containers.RepeatedScalarFieldContainer[str]
    tenant: str
    python_tools_source: str
    def __init__(self, max_turns: _Optional[int] = ..., tool_servers: _Optional[_Iterable[str]] = ..., tenant: _Optional[str] = ..., python_tools_source: _Optional[str] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("prompt_index", "sample_index", "text", "token_ids", "logprobs", "finish_reason", "policy_version", "episode")
    PROMPT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    prompt_index: int
    sample_index: int
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    finish_reason: FinishReason
    policy_version: int
    episode: Episode
    def __init__(self, prompt_index: _Optional[int] = ..., sample_index: _Optional[int] = ..., text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., policy_version: _Optional[int] = ..., episode: _Optional[_Union[Episode, _Mapping]] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "turn", "name", "arguments_json", "output", "is_error", "latency_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    turn: int
    name: str
    arguments_json: str
    output: str
    is_error: bool
    latency_seconds: float
    def __init__(self, id: _Optional[str] = ..., turn: _Optional[int] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., output: _Optional[str] = ..., is_error: _Optional[bool] = ..., latency_seconds: _Optional[float] = ...) -> None: ...

class EpisodeMessage(_message.Message):
    __slots__ = ("role", "content", "tool_call_ids")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_IDS_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    tool_call_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ..., tool_call_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Episode(_message.Message):
    __slots__ = ("token_mask", "turns", "end", "tool_calls", "messages", "final_text")
    TOKEN_MASK_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FINAL_TEXT_FIELD_NUMBER: _ClassVar[int]
    token_mask: _containers.RepeatedScalarFieldContainer[int]
    turns: int
    end: EpisodeEnd
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    messages: _containers.RepeatedCompositeFieldContainer[EpisodeMessage]
    final_text: str
    def __init__(self, token_mask: _Optional[_Iterable[int]] = ..., turns: _Optional[int] = ..., end: _Optional[_Union[EpisodeEnd, str]] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., messages: _Optional[_Iterable[_Union[EpisodeMessage, _Mapping]]] = ..., final_text: _Optional[str] = ...) -> None: ...

class PromptResult(_message.Message):
    __slots__ = ("prompt_index", "prompt_token_ids", "samples")
    PROMPT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    prompt_index: int
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, prompt_index: _Optional[int] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("results", "prompt_tokens", "completion_tokens")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PromptResult]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, results: _Optional[_Iterable[_Union[PromptResult, _Mapping]]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class StreamGenerateRequest(_message.Message):
    __slots__ = ("prompts", "sampling", "request_id", "episode")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedCompositeFieldContainer[Prompt]
    sampling: SamplingParams
    request_id: str
    episode: EpisodeParams
    def __init__(self, prompts: _Optional[_Iterable[_Union[Prompt, _Mapping]]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., request_id: _Optional[str] = ..., episode: _Optional[_Union[EpisodeParams, _Mapping]] = ...) -> None: ...

class StreamGenerateResponse(_message.Message):
    __slots__ = ("sample", "prompt_token_ids")
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    sample: Sample
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sample: _Optional[_Union[Sample, _Mapping]] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape", "size_bytes", "checksum")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: TensorDtype
    shape: _containers.RepeatedScalarFieldContainer[int]
    size_bytes: int
    checksum: str
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[TensorDtype, str]] = ..., shape: _Optional[_Iterable[int]] = ..., size_bytes: _Optional[int] = ..., checksum: _Optional[str] = ...) -> None: ...

class WeightsManifest(_message.Message):
    __slots__ = ("tensors", "checksum_algorithm")
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    checksum_algorithm: ChecksumAlgorithm
    def __init__(self, tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., checksum_algorithm: _Optional[_Union[ChecksumAlgorithm, str]] = ...) -> None: ...

class LoraAdapter(_message.Message):
    __slots__ = ("rank", "alpha", "base_version")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    base_version: int
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., base_version: _Optional[int] = ...) -> None: ...

class WeightsHeader(_message.Message):
    __slots__ = ("version", "manifest", "safetensors_path", "collective", "lora")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SAFETENSORS_PATH_FIELD_NUMBER: _ClassVar[int]
    COLLECTIVE_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    version: int
    manifest: WeightsManifest
    safetensors_path: str
    collective: CollectiveWeights
    lora: LoraAdapter
    def __init__(self, version: _Optional[int] = ..., manifest: _Optional[_Union[WeightsManifest, _Mapping]] = ..., safetensors_path: _Optional[str] = ..., collective: _Optional[_Union[CollectiveWeights, _Mapping]] = ..., lora: _Optional[_Union[LoraAdapter, _Mapping]] = ...) -> None: ...

class CollectiveWeights(_message.Message):
    __slots__ = ("manifest", "store_address", "session", "backend", "timeout_seconds")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    STORE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    manifest: WeightsManifest
    store_address: str
    session: str
    backend: str
    timeout_seconds: float
    def __init__(self, manifest: _Optional[_Union[WeightsManifest, _Mapping]] = ..., store_address: _Optional[str] = ..., session: _Optional[str] = ..., backend: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class WeightsChunk(_message.Message):
    __slots__ = ("tensor_index", "offset", "data")
    TENSOR_INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    tensor_index: int
    offset: int
    data: bytes
    def __init__(self, tensor_index: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class UpdateWeightsRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: WeightsHeader
    chunk: WeightsChunk
    def __init__(self, header: _Optional[_Union[WeightsHeader, _Mapping]] = ..., chunk: _Optional[_Union[WeightsChunk, _Mapping]] = ...) -> None: ...

class UpdateWeightsResponse(_message.Message):
    __slots__ = ("version", "previous_version", "tensor_count", "total_bytes", "receive_seconds", "apply_seconds", "aborted_requests")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENSOR_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    APPLY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ABORTED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    previous_version: int
    tensor_count: int
    total_bytes: int
    receive_seconds: float
    apply_seconds: float
    aborted_requests: int
    def __init__(self, version: _Optional[int] = ..., previous_version: _Optional[int] = ..., tensor_count: _Optional[int] = ..., total_bytes: _Optional[int] = ..., receive_seconds: _Optional[float] = ..., apply_seconds: _Optional[float] = ..., aborted_requests: _Optional[int] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class RequestLimits(_message.Message):
    __slots__ = ("max_prompts", "max_n", "max_tokens", "max_prompt_tokens", "max_episode_turns", "max_tool_calls_per_turn", "max_tool_calls_per_episode", "episode_timeout_seconds")
    MAX_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_N_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_EPISODE_TURNS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOOL_CALLS_PER_TURN_FIELD_NUMBER: _ClassVar[int]
    MAX_TOOL_CALLS_PER_EPISODE_FIELD_NUMBER: _ClassVar[int]
    EPISODE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_prompts: int
    max_n: int
    max_tokens: int
    max_prompt_tokens: int
    max_episode_turns: int
    max_tool_calls_per_turn: int
    max_tool_calls_per_episode: int
    episode_timeout_seconds: float
    def __init__(self, max_prompts: _Optional[int] = ..., max_n: _Optional[int] = ..., max_tokens: _Optional[int] = ..., max_prompt_tokens: _Optional[int] = ..., max_episode_turns: _Optional[int] = ..., max_tool_calls_per_turn: _Optional[int] = ..., max_tool_calls_per_episode: _Optional[int] = ..., episode_timeout_seconds: _Optional[float] = ...) -> None: ...

class ToolServer(_message.Message):
    __slots__ = ("name", "kind", "tools")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model", "architecture", "num_parameters", "vocab_size", "max_model_len", "dtype", "policy_version", "tensors", "limits", "engine", "eos_token_id", "max_lora_rank", "lora", "tool_servers", "collective_backends", "weight_receivers")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    TOOL_SERVERS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIVE_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_RECEIVERS_FIELD_NUMBER: _ClassVar[int]
    model: str
    architecture: str
    num_parameters: int
    vocab_size: int
    max_model_len: int
    dtype: str
    policy_version: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    limits: RequestLimits
    engine: str
    eos_token_id: int
    max_lora_rank: int
    lora: LoraAdapter
    tool_servers: _containers.RepeatedCompositeFieldContainer[ToolServer]
    collective_backends: _containers.RepeatedScalarFieldContainer[str]
    weight_receivers: int
    def __init__(self, model: _Optional[str] = ..., architecture: _Optional[str] = ..., num_parameters: _Optional[int] = ..., vocab_size: _Optional[int] = ..., max_model_len: _Optional[int] = ..., dtype: _Optional[str] = ..., policy_version: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., limits: _Optional[_Union[RequestLimits, _Mapping]] = ..., engine: _Optional[str] = ..., eos_token_id: _Optional[int] = ..., max_lora_rank: _Optional[int] = ..., lora: _Optional[_Union[LoraAdapter, _Mapping]] = ..., tool_servers: _Optional[_Iterable[_Union[ToolServer, _Mapping]]] = ..., collective_backends: _Optional[_Iterable[str]] = ..., weight_receivers: _Optional[int] = ...) -> None: ...
