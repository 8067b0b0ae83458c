"""Shared test fixtures: real service processes on loopback ports."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from service_process import ServiceProcess  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def learner(tmp_path: pathlib.Path):
    """A real learner process with its own data directory."""
    with ServiceProcess("rft-learner", ["--data-dir", str(tmp_path / "learner")]) as proc:
        yield proc


@pytest.fixture
def grader(tmp_path: pathlib.Path):
    """A real grader process with its own data directory."""
    with ServiceProcess("rft-grader", ["--data-dir", str(tmp_path / "grader")]) as proc:
        yield proc
