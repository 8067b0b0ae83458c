"""Learner service configuration (flags and RFT_LEARNER_* environment variables)."""

from __future__ import annotations

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
