"""Rollout service configuration (flags and RFT_ROLLOUT_* environment variables).

Importable without torch or vLLM: the entry point parses this before importing them.
"""

from __future__ import annotations

from typing import Literal

import pydantic
from rft_common.server import ServerConfig


class RolloutConfig(ServerConfig):
    """rft-rollout: samples completions with vLLM and takes versioned weight updates."""

    port: int = pydantic.Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free port (it is logged)."""
    metrics_port: int = pydantic.Field(9101, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 disables it."""
    model: str = ""
    """Hugging Face model directory to serve (config.json, safetensors weights, tokenizer)."""

    # Engine.
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Dtype the engine computes in; "auto" takes the model config's. Weight updates must send this dtype."""
    max_model_len: int = pydantic.Field(0, ge=0)
    """Longest sequence (prompt + completion) in tokens; 0 takes the model's max_position_embeddings."""
    gpu_memory_utilization: float = pydantic.Field(0.3, gt=0, le=1)
    """Fraction of accelerator memory vLLM may use; on CPU the fraction of RAM it reserves."""
    kv_cache_gib: int = pydantic.Field(1, ge=0)
    """CPU only: KV-cache size in whole GiB (sets VLLM_CPU_KVCACHE_SPACE, which vLLM reads as an integer); 0 lets vLLM decide."""
    max_num_seqs: int = pydantic.Field(256, ge=1)
    """Most sequences the engine batches in one step (continuous batching width)."""
    enforce_eager: bool = True
    """Run the model eagerly (no torch.compile / CUDA graphs): fast start-up, the CPU default."""
    enable_chunked_prefill: bool = False
    """Split long prompts across engine steps. Off: vLLM 0.32 on CPU kills its engine when a seeded request is split."""
    seed: int = 0
    """Engine seed for requests that give none."""
    cpu_single_process: bool = True
    """CPU only: run vLLM's model worker inside its engine process (the uniprocess executor). vLLM's own CPU
    default, a worker process of its own, busy-polls shared memory for about a second after every engine
    step, holding a core that a learner on the same machine needs; in one process the engine blocks when idle."""
    cpu_threads: int = pydantic.Field(0, ge=0)
    """CPU only, with cpu_single_process: threads the model computes with (the engine process's
    OMP_NUM_THREADS); 0: one less than the cores this process may use, at least 1, as vLLM's own worker."""
    warmup_requests: int = pydantic.Field(64, ge=0)
    """Concurrent requests generated before health turns SERVING (the first batches are slow)."""

    # Request limits (a request beyond one gets INVALID_ARGUMENT naming it).
    max_prompts: int = pydantic.Field(512, ge=1)
    """Most prompts in one Generate / StreamGenerate request."""
    max_n: int = pydantic.Field(64, ge=1)
    """Most samples per prompt."""
    max_tokens: int = pydantic.Field(4096, ge=1)
    """Largest max_tokens a request may ask for."""
    default_max_tokens: int = pydantic.Field(256, ge=1)
    """max_tokens of a request that leaves it 0."""
    max_prompt_tokens: int = pydantic.Field(4096, ge=1)
    """Longest prompt in tokens (after chat templating)."""
    max_episode_turns: int = pydantic.Field(16, ge=1, le=1024)
    """Largest EpisodeParams.max_turns (model turns of one tool-using episode)."""
    max_tool_calls_per_turn: int = pydantic.Field(8, ge=1, le=1024)
    """Tool calls one model turn may make; the calls after them are not run, and the model
    gets a tool error for each (a model that writes 500 calls in one turn cannot flood
    the tool servers)."""
    max_tool_calls_per_episode: int = pydantic.Field(32, ge=1, le=65536)
    """Tool calls one episode may make over all its turns; later calls are not run (a tool
    error each)."""
    episode_timeout_seconds: float = pydantic.Field(300.0, gt=0, le=540)
    """Wall-clock limit of one episode, from its first turn. Past it the turn or the tool
    calls in flight are cancelled and the episode ends with end reason TIMEOUT, keeping
    what came before. At most 540: below the learner's 600-s Generate deadline, so an
    episode ends on the rollout's terms and a client retry never runs its tools twice."""

    # Tools of episodes.
    tool_servers_file: str = ""
    """JSON file listing the tool servers episodes may call ({"servers": [...]}, see
    docs/agents.md); their credentials stay in it. Empty: no tools (episodes without tools still run)."""

    # Weight updates.
    weights_dir: str = ""
    """Directory (shared volume) that UpdateWeights' safetensors_path must lie in; empty refuses file updates."""
    staging_dir: str = ""
    """Where streamed weights are assembled before they are applied; empty: /dev/shm when present, else the temp dir."""
    max_lora_rank: Literal[0, 1, 8, 16, 32, 64, 128, 256, 320, 512] = 0
    """Largest LoRA adapter rank an update may send (vLLM's choices); 0: no LoRA support, adapter updates are refused."""

    @pydantic.field_validator("max_lora_rank", mode="before")
    @classmethod
    def _rank_from_text(cls, value: object) -> object:
        # Flags and environment variables arrive as text, and Literal[int] takes no text.
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @pydantic.model_validator(mode="after")
    def _check(self) -> RolloutConfig:
        if not self.model:
            raise ValueError("model is required: a Hugging Face model directory (--model or RFT_ROLLOUT_MODEL)")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens {self.default_max_tokens} is above max_tokens {self.max_tokens}")
        return self
