"""Learner service configuration (flags and RFT_LEARNER_* environment variables)."""

from __future__ import annotations

import re
from typing import Literal

import pydantic
from rft_common.server import ServerConfig


class LearnerConfig(ServerConfig):
    """rft-learner: files and fine-tuning jobs API, trainer and evaluator."""

    port: int = pydantic.Field(50053, ge=0, le=65535)
    """gRPC port; 0 picks a free port (it is logged)."""
    metrics_port: int = pydantic.Field(9103, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 disables it."""
    data_dir: str = "./data/learner"
    """Directory of the job database, uploaded files, checkpoints and exported models."""
    max_file_bytes: int = pydantic.Field(512 * 1024 * 1024, ge=1)
    """Largest dataset file accepted by UploadFile, in bytes."""
    max_line_bytes: int = pydantic.Field(1024 * 1024, ge=1)
    """Largest single JSONL line (one example), in bytes."""
    rollout_addresses: str = "127.0.0.1:50051"
    """Rollout replicas: 'host:port,host:port' or 'dns:///headless-service:port' (every address it resolves to)."""
    grader_address: str = "127.0.0.1:50052"
    """Default grader service (host:port); a job may name another rft.grader.v1 service."""
    rollout_token_file: str = ""
    """File with the bearer token for the rollout service, if it requires one."""
    grader_token_file: str = ""
    """File with the bearer token for the grader service, if it requires one."""
    tls_ca_file: str = ""
    """CA bundle to verify the rollout and grader services' TLS certificates; empty = plaintext."""
    checkpoint_interval: int = pydantic.Field(10, ge=1)
    """Optimizer steps between checkpoints (a job also checkpoints on pause and at the end)."""
    remote_patience_seconds: float = pydantic.Field(600.0, gt=0)
    """How long a job keeps retrying an unavailable rollout or grader before it fails."""
    trainer_ranks: int = pydantic.Field(1, ge=1, le=64)
    """Processes the update step runs on, data-parallel over torch.distributed (gloo); 1 = in the service."""
    torch_threads: int = pydantic.Field(0, ge=0)
    """CPU threads for the trainer's torch ops; 0 = torch's default."""
    trainer_sharding: Literal["none", "fsdp"] = "none"
    """With several trainer ranks: "none" keeps a whole model replica on every rank (data-parallel); "fsdp" shards policy, KL reference, value head and optimizer state over the ranks with FSDP2, for models that do not fit one device (LoRA jobs stay data-parallel). Resume a job with the same setting."""
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend of the trainer ranks under torchrun: auto = nccl when they train on CUDA (each rank on cuda:LOCAL_RANK), gloo on CPU; nccl needs CUDA devices and gloo CPU ones. Rank 0's commands to the other ranks always travel over a gloo group beside it."""
    device: str = "auto"
    """Where the trainer keeps policy, reference and value head: auto (the first CUDA GPU when there is one, else cpu), cpu, cuda or cuda:N. Under torchrun auto and cuda mean cuda:LOCAL_RANK, one GPU per rank."""
    precision: Literal["auto", "fp32", "bf16", "bf16-mixed"] = "auto"
    """Training precision: fp32; bf16 (bf16 weights and optimizer state: half the memory, lossy updates); bf16-mixed (fp32 master weights, bf16 autocast compute); auto = bf16-mixed on CUDA, fp32 on CPU."""
    weight_sync: Literal["stream", "collective"] = "stream"
    """How full weights reach the rollout replicas after each update: stream = chunks on the UpdateWeights gRPC call (portable, checksummed); collective = a torch.distributed broadcast from trainer rank 0 straight into each replica's vLLM workers, UpdateWeights carrying only the manifest (NCCL GPU to GPU, gloo otherwise; the replicas must reach --weight-sync-host:--weight-sync-port). LoRA adapters always stream."""
    weight_sync_backend: Literal["auto", "gloo", "nccl"] = "auto"
    """With --weight-sync collective: nccl when the trainer is on CUDA and the replica offers it (a GPU rollout), else gloo (host memory over TCP)."""
    weight_sync_host: str = ""
    """With --weight-sync collective: the address replicas reach this learner's TCPStore at, and the one it listens on; "" = it listens on every interface and tells each replica this host's address on the route to it (the pod IP in a cluster)."""
    weight_sync_port: int = pydantic.Field(0, ge=0, le=65535)
    """With --weight-sync collective: port of this learner's TCPStore (the rendezvous); 0 = a free port. The broadcast itself uses ports gloo/NCCL pick."""
    weight_sync_timeout_seconds: float = pydantic.Field(300.0, gt=0, le=3600)
    """With --weight-sync collective: how long a transfer waits for a replica's workers to join, and for each tensor."""
    micro_batch_tokens: int = pydantic.Field(16384, ge=0)
    """Padded tokens (sequences x longest sequence) per forward/backward pass; a larger minibatch is split and its gradients accumulated. Bounds the trainer's activation memory; 0 = the whole minibatch at once."""

    http_host: str = "0.0.0.0"
    """Address the OpenAI-compatible HTTP API binds to ("127.0.0.1" for loopback only)."""
    http_port: int = pydantic.Field(8080, ge=0, le=65535)
    """Port of the OpenAI-compatible HTTP API (base_url http://HOST:PORT/v1); 0 disables it."""
    api_keys_file: str = ""
    """Tenant API keys, one '<tenant> sha256:<hex of the key>' per line. On gRPC a key acts for its own tenant only (a request's tenant field may name it or be empty) while --auth-token acts for any tenant; on the HTTP API each key sees only its tenant's files, jobs and models, and --auth-token is tenant "default"."""
    model_catalogue: str = ""
    """Base models the HTTP API offers, 'name=model-dir,name=model-dir'; jobs and chat completions name a model from here (or a fine-tuned one), never a path."""
    console_dir: str = ""
    """Built web console served at /console/ on the HTTP API's port; "" = console/dist of the source tree (`make install` builds it), "none" = no console."""
    inference_max_models: int = pydantic.Field(1, ge=1, le=64)
    """Models chat completions keep loaded at once, each in its own vLLM server process; the least recently used idle one is stopped to make room."""
    inference_kv_cache_gib: int = pydantic.Field(1, ge=0)
    """CPU only: KV-cache of each chat-completions vLLM server in whole GiB (VLLM_CPU_KVCACHE_SPACE, which vLLM reads as an integer); 0 lets vLLM decide."""
    inference_gpu_memory_utilization: float = pydantic.Field(0.3, gt=0, le=1)
    """GPU only: fraction of GPU memory each chat-completions vLLM server may take (the trainer and rollout need the rest)."""
    inference_start_timeout_seconds: float = pydantic.Field(900.0, gt=0)
    """How long the first chat completion of a model waits for its vLLM server to load."""

    @pydantic.field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"{value!r} is not a device; expected auto, cpu, cuda or cuda:N")
        return value
