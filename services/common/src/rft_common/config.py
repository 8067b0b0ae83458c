"""Typed configuration read from command-line flags and environment variables.

Each setting is a field of a pydantic model whose attribute docstring is its only help
text. `load_config` turns the model into argparse flags (`--metrics-port`) and
environment variables (`RFT_GRADER_METRICS_PORT`): a flag beats the environment, which
beats the default. Bounds and types are checked by pydantic, and a bad value names the
flag and the environment variable it came from.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from typing import Any, TypeVar

import pydantic

ConfigT = TypeVar("ConfigT", bound=pydantic.BaseModel)


class Config(pydantic.BaseModel):
    """Base for every service config: field docstrings become the help text."""

    model_config = pydantic.ConfigDict(use_attribute_docstrings=True, extra="forbid")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env(prefix: str, name: str) -> str:
    return f"{prefix}_{name}".upper()


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    args = typing.get_args(annotation)
    return (typing.get_origin(annotation) in (typing.Union, types.UnionType)) and bool in args


def add_config_arguments(parser: argparse.ArgumentParser, model: type[Config], env_prefix: str) -> None:
    """Add one flag per field of `model` to `parser`, with help from the docstrings."""
    group = parser.add_argument_group(model.__name__)
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        help_text = (field.description or "").strip()
        help_text += f" [default: {default!r}; env {_env(env_prefix, name)}]"
        if _is_bool(field.annotation):
            group.add_argument(
                _flag(name), dest=name, default=None, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            group.add_argument(_flag(name), dest=name, default=None, metavar="VALUE", help=help_text)


def config_from_namespace(model: type[ConfigT], namespace: argparse.Namespace, env_prefix: str) -> ConfigT:
    """Build `model` from parsed flags, falling back to environment variables."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in model.model_fields:
        flag_value = getattr(namespace, name, None)
        env_name = _env(env_prefix, name)
        if flag_value is not None:
            values[name] = flag_value
            sources[name] = _flag(name)
        elif env_name in os.environ:
            values[name] = os.environ[env_name]
            sources[name] = f"${env_name}"
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            where = sources.get(field, "default")
            problems.append(f"{_flag(field)} (from {where}): {error['msg']}")
        raise SystemExit("invalid configuration:\n  " + "\n  ".join(problems)) from None


def load_config(
    model: type[ConfigT], env_prefix: str, argv: list[str] | None = None, prog: str | None = None
) -> ConfigT:
    """Parse `argv` (default: sys.argv[1:]) and the environment into `model`."""
    parser = argparse.ArgumentParser(prog=prog, description=model.__doc__)
    add_config_arguments(parser, model, env_prefix)
    return config_from_namespace(model, parser.parse_args(argv), env_prefix)


def parse_serve_command(prog: str, model: type[ConfigT], env_prefix: str, argv: list[str] | None = None) -> ConfigT:
    """`<prog> serve [flags]`: the command line of every service entry point."""
    parser = argparse.ArgumentParser(prog=prog, description=(model.__doc__ or "").strip())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the gRPC server until SIGTERM",
        description="Run the server. Every flag can also be set with the environment variable shown; "
        "flags win over the environment.",
    )
    add_config_arguments(serve, model, env_prefix)
    return config_from_namespace(model, parser.parse_args(argv), env_prefix)
