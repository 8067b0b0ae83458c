"""Global options and the plumbing each command group uses to declare its commands."""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable

from rft_cli.services import (
    DEFAULT_GRADER,
    DEFAULT_LEARNER,
    Connections,
    Stub,
    env_default,
    grader_endpoint,
    learner_endpoint,
)

Handler = Callable[[argparse.Namespace, Connections], Awaitable[int]]


def add_global_options(parser: argparse.ArgumentParser, with_defaults: bool) -> None:
    """--learner, --grader, --token, --tls-ca, --json.

    The top-level parser holds the defaults; every command accepts the same flags again
    (so `rft jobs list --json` works) with SUPPRESS defaults that never override them.
    """

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--learner",
        metavar="HOST:PORT",
        default=default(env_default("RFT_LEARNER_ADDRESS", DEFAULT_LEARNER)),
        help=f"learner service [env RFT_LEARNER_ADDRESS; default {DEFAULT_LEARNER}]",
    )
    group.add_argument(
        "--grader",
        metavar="HOST:PORT",
        default=default(env_default("RFT_GRADER_ADDRESS", DEFAULT_GRADER)),
        help=f"grader service [env RFT_GRADER_ADDRESS; default {DEFAULT_GRADER}]",
    )
    group.add_argument(
        "--token",
        default=default(os.environ.get("RFT_TOKEN", "")),
        help="bearer token sent to every service [env RFT_TOKEN]",
    )
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=default(os.environ.get("RFT_TLS_CA", "")),
        help="CA bundle: talk TLS and verify the services' certificates [env RFT_TLS_CA]",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="machine-readable JSON on stdout instead of tables (JSON lines for streams)",
    )


def global_options_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    add_global_options(parent, with_defaults=False)
    return parent


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    handler: Handler | None,
    help_text: str,
    description: str = "",
    epilog: str = "",
) -> argparse.ArgumentParser:
    """A command (or command group when handler is None) with the global options."""
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        epilog=epilog,
        parents=[global_options_parent()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def add_group(subparsers: argparse._SubParsersAction, name: str, help_text: str, description: str = ""):
    """A command group; returns its own subparsers."""
    parser = subparsers.add_parser(
        name, help=help_text, description=description or help_text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def learner(args: argparse.Namespace, conns: Connections, stub_class: type) -> Stub:
    return conns.stub(learner_endpoint(args.learner), stub_class)


def grader(args: argparse.Namespace, conns: Connections, stub_class: type) -> Stub:
    return conns.stub(grader_endpoint(args.grader), stub_class)
