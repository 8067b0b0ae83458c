"""Tenants come from credentials, on the gRPC services too: a tenant's API key acts for its
own tenant only (the request's tenant field may narrow to it, never choose another),
while the service token is the operator's and acts for any tenant."""

from __future__ import annotations

import grpc
import pytest
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from service_process import ServiceProcess
from tenant_keys import KEYS, OPERATOR, SPEC, auth, code_of, service_args


@pytest.fixture(scope="module")
def keys_args(tmp_path_factory) -> list[str]:
    return service_args(tmp_path_factory.mktemp("keys"))


def test_grader_tenants_come_from_keys(keys_args, tmp_path) -> None:
    args = ["--data-dir", str(tmp_path), *keys_args]
    with ServiceProcess("rft-grader", args) as grader, grader.channel() as channel:
        stub = grader_pb2_grpc.GraderServiceStub(channel)
        spec = grader_pb2.RegisterGraderRequest(name="judge")
        spec.spec.update(SPEC)
        mine = stub.RegisterGrader(spec, metadata=auth(KEYS["alice"]), timeout=30).grader
        assert mine.tenant == "alice"  # no tenant named: the key's own

        # Bob cannot name alice as his tenant, for any RPC.
        for call, request in (
            (stub.GetGrader, grader_pb2.GetGraderRequest(tenant="alice", grader_id=mine.id)),
            (stub.ListGraders, grader_pb2.ListGradersRequest(tenant="alice")),
            (stub.DeleteGrader, grader_pb2.DeleteGraderRequest(tenant="alice", grader_id=mine.id)),
            (stub.Grade, grader_pb2.GradeRequest(tenant="alice", grader_id=mine.id)),
        ):
            assert code_of(call, request, auth(KEYS["bob"])) == grpc.StatusCode.PERMISSION_DENIED
        # In his own tenant alice's grader does not exist.
        bobs_view = grader_pb2.GetGraderRequest(grader_id=mine.id)
        assert code_of(stub.GetGrader, bobs_view, auth(KEYS["bob"])) == grpc.StatusCode.NOT_FOUND
        assert list(stub.ListGraders(grader_pb2.ListGradersRequest(), metadata=auth(KEYS["bob"])).graders) == []
        # A wrong key is refused; the operator acts for alice.
        assert code_of(stub.ListGraders, grader_pb2.ListGradersRequest(), auth("sk-nobody")) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        listed = stub.ListGraders(grader_pb2.ListGradersRequest(tenant="alice"), metadata=auth(OPERATOR)).graders
        assert [g.id for g in listed] == [mine.id]
        graded = stub.Grade(
            grader_pb2.GradeRequest(
                tenant="alice",
                grader_id=mine.id,
                items=[grader_pb2.GradeItem(sample=grader_pb2.SampleOutput(output_text="7"))],
            ),
            metadata=auth(KEYS["alice"]),
            timeout=30,
        )
        assert graded.results[0].score == 1.0
