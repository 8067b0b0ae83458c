"""`rft-rollout serve`: entry point. Parses config first; imports vLLM after."""

from __future__ import annotations

import sys

from rft_common.config import parse_serve_command
from rft_common.runtime import run_service

from rft_rollout.config import RolloutConfig


def main(argv: list[str] | None = None) -> None:
    config = parse_serve_command("rft-rollout", RolloutConfig, "RFT_ROLLOUT", argv)
    from rft_rollout.app import serve

    run_service("rft-rollout", config, lambda: serve(config))


if __name__ == "__main__":
    main(sys.argv[1:])
