"""The server under test: RFT_GRADER_CONFORMANCE_ADDRESS=host:port points the suite at
any implementation of rft.grader.v1 (plaintext gRPC); without it, our own rft-grader
is started. Another implementation may deselect python cases with -m "not python_grader"
(they also skip themselves when ListGraderTypes says python is not enabled)."""

from __future__ import annotations

import os
import uuid

import grpc
import pytest
from graderlib import Stub
from service_process import ServiceProcess

ADDRESS_ENV = "RFT_GRADER_CONFORMANCE_ADDRESS"


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory):
    address = os.environ.get(ADDRESS_ENV)
    if address:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            yield Stub(channel)
        return
    with ServiceProcess("rft-grader", ["--data-dir", str(tmp_path_factory.mktemp("conformance"))]) as proc:
        with proc.channel() as channel:
            yield Stub(channel)


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test, so the suite can run again against a long-lived server."""
    return f"conformance-{uuid.uuid4().hex[:12]}"
