"""Fixtures of the learner tests: a tiny model, and real rollout / grader / learner processes."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
from service_process import ServiceProcess

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).parent))


def _build_model_module():
    spec = importlib.util.spec_from_file_location("build_base_model", REPO / "scripts" / "build_base_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> pathlib.Path:
    """A random-initialised tiny Qwen2 model directory with the project's tokenizer."""
    return _build_model_module().build_model(tmp_path_factory.mktemp("model") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="module")
def rollout(tiny_model):
    with ServiceProcess("rft-rollout", ["--model", str(tiny_model)], ready_timeout=300) as proc:
        yield proc


@pytest.fixture(scope="module")
def grader_service(tmp_path_factory):
    with ServiceProcess("rft-grader", ["--data-dir", str(tmp_path_factory.mktemp("grader"))]) as proc:
        yield proc
