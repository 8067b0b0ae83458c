"""`rft-learner serve`: entry point. Parses config first; imports the service after."""

from __future__ import annotations

import sys

from rft_common.config import parse_serve_command
from rft_common.runtime import run_service

from rft_learner.config import LearnerConfig


def main(argv: list[str] | None = None) -> None:
    config = parse_serve_command("rft-learner", LearnerConfig, "RFT_LEARNER", argv)
    from rft_learner.trainer.devices import resolve_placement

    try:  # before any service starts: a flag this machine cannot honour is a usage error
        placement = resolve_placement(config.device, config.precision)
    except ValueError as exc:
        sys.exit(f"rft-learner: {exc}")
    if placement.device.type != "cpu" and config.trainer_ranks > 1:
        sys.exit("rft-learner: --trainer-ranks > 1 runs on CPU (gloo) only for now; use one rank per GPU learner")
    from rft_learner.app import serve

    run_service("rft-learner", config, lambda: serve(config))


if __name__ == "__main__":
    main(sys.argv[1:])
