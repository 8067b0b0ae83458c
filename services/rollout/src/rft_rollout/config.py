"""Rollout service configuration (flags and RFT_ROLLOUT_* environment variables)."""

from __future__ import annotations

import pydantic
from rft_common.server import ServerConfig


class RolloutConfig(ServerConfig):
    """rft-rollout: samples completions with vLLM and takes versioned weight updates."""

    port: int = pydantic.Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free port (it is logged)."""
    metrics_port: int = pydantic.Field(9101, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 disables it."""
    model: str = ""
    """Hugging Face model directory to serve."""
