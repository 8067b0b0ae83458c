"""Every RPC of the grader and the learner, fuzzed from its request descriptor (rpc_fuzz):
no request, however malformed, gets UNKNOWN or a message that leaks Python internals, and
each service still answers its health check afterwards."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft.learner.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2, fine_tuning_pb2_grpc
from rpc_fuzz import check_answer, messages
from service_process import ServiceProcess

EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)


def unary_methods(module, service: str):
    """(name, request class) of each unary-request method of a service."""
    descriptor = module.DESCRIPTOR.services_by_name[service]
    for method in descriptor.methods:
        if not method.client_streaming:
            yield method.name, getattr(module, method.input_type.name), method.server_streaming


def serving(channel: grpc.Channel) -> bool:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def grader(tmp_path_factory):
    with ServiceProcess("rft-grader", ["--data-dir", str(tmp_path_factory.mktemp("grader"))]) as proc:
        yield proc


@pytest.fixture(scope="module")
def learner(grader, tmp_path_factory):
    args = ["--data-dir", str(tmp_path_factory.mktemp("learner")), "--grader-address", grader.address]
    args += ["--rollout-addresses", "127.0.0.1:9", "--remote-patience-seconds", "1"]
    with ServiceProcess("rft-learner", args) as proc:
        yield proc


@pytest.mark.parametrize("method", list(unary_methods(grader_pb2, "GraderService")), ids=lambda m: m[0])
def test_grader_rpcs_answer_any_request_cleanly(grader, method) -> None:
    name, request_cls, _ = method
    with grader.channel() as channel:
        call = getattr(grader_pb2_grpc.GraderServiceStub(channel), name)

        @EXAMPLES
        @given(messages(request_cls.DESCRIPTOR, request_cls))
        def fuzz(request) -> None:
            check_answer(call, request)

        fuzz()
        assert serving(channel)


@pytest.mark.parametrize(
    ("module", "service", "stub_cls", "method"),
    [(files_pb2, "FilesService", files_pb2_grpc.FilesServiceStub, m) for m in unary_methods(files_pb2, "FilesService")]
    + [
        (fine_tuning_pb2, "FineTuningService", fine_tuning_pb2_grpc.FineTuningServiceStub, m)
        for m in unary_methods(fine_tuning_pb2, "FineTuningService")
    ],
    ids=lambda value: value[0] if isinstance(value, tuple) else "",
)
def test_learner_rpcs_answer_any_request_cleanly(learner, module, service, stub_cls, method) -> None:
    name, request_cls, streaming = method
    with learner.channel() as channel:
        call = getattr(stub_cls(channel), name)

        @EXAMPLES
        @given(messages(request_cls.DESCRIPTOR, request_cls))
        def fuzz(request) -> None:
            check_answer(call, request, timeout=5 if streaming else 30)

        fuzz()
        assert serving(channel)


def test_upload_streams_answer_any_sequence_cleanly(learner) -> None:
    request = files_pb2.UploadFileRequest
    with learner.channel() as channel:
        upload = files_pb2_grpc.FilesServiceStub(channel).UploadFile

        @EXAMPLES
        @given(st.lists(messages(request.DESCRIPTOR, request), max_size=5))
        def fuzz(stream) -> None:
            check_answer(lambda requests, **kw: upload(iter(requests), **kw), stream)

        fuzz()
        assert serving(channel)
