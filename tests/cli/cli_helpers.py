"""Helpers of the CLI tests: run `rft` as a subprocess, write inputs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

BIN = pathlib.Path(sys.executable).parent
HERE = pathlib.Path(__file__).resolve().parent
STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


class Cli:
    """Runs `.venv/bin/rft` against the given services; returns the CompletedProcess."""

    def __init__(self, learner: str = "127.0.0.1:1", grader: str = "127.0.0.1:1") -> None:
        self.learner = learner
        self.grader = grader

    def __call__(
        self, *args: str, cwd: pathlib.Path | None = None, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RFT_")}, **(env or {})}
        command = [str(BIN / "rft"), "--learner", self.learner, "--grader", self.grader, *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)

    def json(self, *args: str, **kwargs) -> object:
        result = self(*args, "--json", **kwargs)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_json(path: pathlib.Path, value: object) -> pathlib.Path:
    path.write_text(json.dumps(value))
    return path
