"""Fixtures of the grader tests: one real rft-grader process per session, a fake chat
model endpoint on loopback, and a gRPC stub."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from graderlib import FakeChatModel, Stub  # noqa: E402
from service_process import ServiceProcess  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "python_grader: needs python graders (a sandbox); other implementations may deselect these"
    )


@pytest.fixture(scope="session")
def fake_model():
    with FakeChatModel() as model:
        yield model


@pytest.fixture(scope="session")
def grader_service(tmp_path_factory: pytest.TempPathFactory, fake_model: FakeChatModel):
    """Our real grader with small limits, so limit behaviour is quick to reach."""
    data_dir = tmp_path_factory.mktemp("grader")
    args = [
        "--data-dir", str(data_dir),
        "--model-base-url", fake_model.url,
        "--model-api-key", "model-secret",
        "--max-batch-items", "300",
        "--max-text-chars", "100000",
        "--cpu-sample-timeout-seconds", "3",
    ]  # fmt: skip
    with ServiceProcess("rft-grader", args) as proc:
        yield proc


@pytest.fixture(scope="session")
def stub(grader_service: ServiceProcess):
    with grader_service.channel() as channel:
        yield Stub(channel)
