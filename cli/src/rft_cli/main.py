"""`rft`: the command-line client of the RFT services.

Exit codes scripts can trust: 0 success, 1 the service refused or failed the request
(or the watched job failed), 2 bad usage or an unreadable local input, 3 a service
could not be reached, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from rft_cli import evals, files, graders, jobs, models
from rft_cli.common import add_global_options
from rft_cli.output import EXIT_OK, CliError, error
from rft_cli.services import Connections, ServiceError

EXIT_INTERRUPTED = 130
EPILOG = """\
exit codes: 0 ok · 1 refused or failed (the message says why) · 2 bad usage or input file
            · 3 a service is unreachable · 130 interrupted
Every command takes the global options too, e.g. `rft jobs list --json`.
`rft COMMAND ACTION --help` describes each action."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rft",
        description="Client of the RFT services: datasets, fine-tuning jobs, graders, evaluations, models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_options(parser, with_defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (files, jobs, graders, evals, models):
        module.register(commands)
    return parser


async def run(args: argparse.Namespace) -> int:
    conns = Connections(token=args.token, tls_ca=args.tls_ca)
    try:
        return await args.handler(args, conns)
    except (CliError, ServiceError) as exc:
        error(str(exc))
        return exc.code
    finally:
        await conns.close()


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so temporary services are stopped


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `rft jobs list | head -1`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)


if __name__ == "__main__":
    main()
