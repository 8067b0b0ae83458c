"""Grader service configuration (flags and RFT_GRADER_* environment variables)."""

from __future__ import annotations

import dataclasses
import pathlib

import pydantic
from rft_common.server import ServerConfig

from rft_grader.limits import Limits
from rft_grader.sandbox import SandboxSettings


class GraderConfig(SandboxSettings, ServerConfig):
    """rft-grader: scores model samples with OpenAI-compatible grader specs."""

    port: int = pydantic.Field(50052, ge=0, le=65535)
    """gRPC port; 0 picks a free port (it is logged)."""
    metrics_port: int = pydantic.Field(9102, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 disables it."""
    data_dir: str = "./data/grader"
    """Directory of the grader registry database (and the unpacked WordNet used by METEOR)."""
    api_keys_file: str = ""
    """Tenant API keys, one '<tenant> sha256:<hex of the key>' per line: a key acts for its own tenant only (a request's tenant field may name it or be empty; another tenant is PERMISSION_DENIED), while --auth-token acts for any tenant."""
    max_batch_items: int = pydantic.Field(Limits.max_batch_items, ge=1)
    """Most (sample, item) pairs accepted in one Grade call; more is INVALID_ARGUMENT."""
    max_text_chars: int = pydantic.Field(Limits.max_text_chars, ge=1)
    """Longest sample output_text graded; a longer one is a per-sample INVALID_INPUT error."""
    max_spec_bytes: int = pydantic.Field(Limits.max_spec_bytes, ge=1024)
    """Largest grader spec, as compact JSON in bytes (Grade, ValidateGrader, RegisterGrader); larger is INVALID_ARGUMENT."""
    max_multi_graders: int = pydantic.Field(Limits.max_multi_graders, ge=1, le=1024)
    """Most sub-graders in one multi grader; more is INVALID_ARGUMENT (an issue on `graders`)."""
    max_rendered_chars: int = pydantic.Field(Limits.max_rendered_chars, ge=1)
    """Most characters one grader's templates render for one sample (all its fields together); more is a per-sample INVALID_INPUT error naming the field."""
    max_call_rendered_chars: int = pydantic.Field(Limits.max_call_rendered_chars, ge=1)
    """Most characters all templates render in one Grade call (every sample and sub-grader); samples past it get INVALID_INPUT."""
    max_error_message_chars: int = pydantic.Field(Limits.max_error_message_chars, ge=100)
    """Longest per-sample error message; longer ones keep their start and say how many characters were cut."""
    max_response_bytes: int = pydantic.Field(Limits.max_response_bytes, ge=64 * 1024)
    """Largest Grade response: error messages are cut to fit it; results whose scores and metrics alone pass it are INVALID_ARGUMENT."""
    spec_cache_bytes: int = pydantic.Field(Limits.spec_cache_bytes, ge=0)
    """Memory for parsed specs kept between calls, counted as their JSON size; the least recently used go first."""
    max_python_tools_bytes: int = pydantic.Field(Limits.max_python_tools_bytes, ge=1024)
    """Largest Python tool source (DescribePythonTools, CallPythonTool), UTF-8 bytes; larger is INVALID_ARGUMENT."""
    max_python_tool_arguments_bytes: int = pydantic.Field(Limits.max_python_tool_arguments_bytes, ge=1024)
    """Largest arguments object of one CallPythonTool, in protobuf bytes; larger is INVALID_ARGUMENT."""
    cpu_workers: int = pydantic.Field(2, ge=1, le=64)
    """Worker processes for library graders (text_similarity, math_equivalence, json_check)."""
    cpu_sample_timeout_seconds: float = pydantic.Field(10.0, gt=0)
    """Wall-clock limit for one sample in a worker process; past it the worker is killed (TIMEOUT)."""
    cpu_worker_memory_bytes: int = pydantic.Field(4 * 1024**3, ge=256 * 1024**2)
    """Address-space limit of each worker process (RESOURCE_LIMIT when exceeded)."""
    model_base_url: str = ""
    """OpenAI-compatible endpoint for score_model / label_model, e.g. http://vllm:8000/v1; empty disables them."""
    model_api_key: str = ""
    """Bearer token sent to model_base_url."""
    model_api_key_file: str = ""
    """File holding the model endpoint's token (e.g. a mounted Secret); overrides model_api_key."""
    model_timeout_seconds: float = pydantic.Field(60.0, gt=0)
    """Timeout of one chat-completion call (a MODEL_CALL error past it)."""
    model_max_concurrency: int = pydantic.Field(16, ge=1)
    """Most chat-completion calls in flight at once."""
    model_max_reply_bytes: int = pydantic.Field(4 * 1024**2, ge=1024)
    """Largest chat-completion answer read; past it the call stops with a MODEL_CALL error."""
    allow_spec_base_url: bool = False
    """Let specs name their own model endpoint (`base_url`); off by default: it makes the server call any URL. Such endpoints never get --model-api-key."""

    @pydantic.model_validator(mode="after")
    def _response_fits_a_message(self) -> GraderConfig:
        if self.max_response_bytes > self.max_message_bytes:
            raise ValueError("max_response_bytes must not exceed max_message_bytes (gRPC would refuse to send it)")
        return self

    def limits(self) -> Limits:
        """The size limits the core and the graders enforce."""
        return Limits(**{field.name: getattr(self, field.name) for field in dataclasses.fields(Limits)})

    def resolved_model_api_key(self) -> str:
        """The model endpoint's token, read from model_api_key_file when set."""
        if self.model_api_key_file:
            return pathlib.Path(self.model_api_key_file).read_text().strip()
        return self.model_api_key
