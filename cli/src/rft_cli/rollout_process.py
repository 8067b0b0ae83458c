"""A temporary rollout service for `rft evals run` (rft_common.rollout_process, which the
learner's HTTP API also uses), with its failures as CLI errors."""

from __future__ import annotations

from rft_common import rollout_process
from rft_common.rollout_process import RolloutStartError, default_rollout_command, free_port

from rft_cli.output import EXIT_FAILED, CliError

__all__ = ["RolloutProcess", "default_rollout_command", "free_port"]


class RolloutProcess(rollout_process.RolloutProcess):
    """Async context manager yielding the address of a serving rollout for `model`; a
    rollout that cannot start is a CliError (a usage error when the command is missing)
    with the details: the machine is the user's own, so the message names the command,
    the exit code and the log (kept) with its last lines."""

    def __init__(
        self,
        command: str,
        model: str,
        extra_args: str = "",
        ready_timeout: float = 900.0,
        tool_servers_file: str = "",
    ) -> None:
        super().__init__(
            command,
            model,
            extra_args,
            ready_timeout,
            tool_servers_file,
            timeout_hint="raise --ready-timeout?",
            detailed_errors=True,
        )

    async def __aenter__(self) -> str:
        try:
            return await super().__aenter__()
        except RolloutStartError as exc:
            if exc.launch:
                raise CliError(
                    f"{exc.message}; install it (make install) or pass --rollout-command / --rollout ADDRESS"
                ) from None
            raise CliError(exc.message, EXIT_FAILED) from None
