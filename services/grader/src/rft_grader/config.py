"""Grader service configuration (flags and RFT_GRADER_* environment variables)."""

from __future__ import annotations

import pydantic
from rft_common.server import ServerConfig


class GraderConfig(ServerConfig):
    """rft-grader: scores model samples with OpenAI-compatible grader specs."""

    port: int = pydantic.Field(50052, ge=0, le=65535)
    """gRPC port; 0 picks a free port (it is logged)."""
    metrics_port: int = pydantic.Field(9102, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 disables it."""
    data_dir: str = "./data/grader"
    """Directory of the grader registry database."""
    max_batch_items: int = pydantic.Field(4096, ge=1)
    """Most (sample, item) pairs accepted in one Grade call."""
