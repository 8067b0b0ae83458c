"""`rft-grader serve`: entry point. Parses config first; imports the service after."""

from __future__ import annotations

import sys

from rft_common.config import parse_serve_command
from rft_common.runtime import run_service

from rft_grader.config import GraderConfig


def main(argv: list[str] | None = None) -> None:
    config = parse_serve_command("rft-grader", GraderConfig, "RFT_GRADER", argv)
    try:  # a malformed keys file is a usage error, reported before anything starts
        from rft_common.api_keys import ApiKeys

        ApiKeys.load(config.api_keys_file)
    except (OSError, ValueError) as exc:
        sys.exit(f"rft-grader: {exc}")
    from rft_grader.app import serve

    run_service("rft-grader", config, lambda: serve(config))


if __name__ == "__main__":
    main(sys.argv[1:])
