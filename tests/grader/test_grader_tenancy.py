"""Tenants come from credentials, on the gRPC services too: a tenant's API key acts for its
own tenant only (the request's tenant field may narrow to it, never choose another),
while the service token is the operator's and acts for any tenant."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from service_process import ServiceProcess

OPERATOR = "op-token-0123456789"
KEYS = {"alice": "sk-alice-0123456789", "bob": "sk-bob-9876543210"}
SPEC = {"type": "string_check", "name": "eq", "input": "{{sample.output_text}}", "reference": "7", "operation": "eq"}


def auth(secret: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {secret}")]


@pytest.fixture(scope="module")
def keys_args(tmp_path_factory) -> list[str]:
    keys_file = tmp_path_factory.mktemp("keys") / "api-keys"
    keys_file.write_text("".join(f"{t} sha256:{hashlib.sha256(k.encode()).hexdigest()}\n" for t, k in KEYS.items()))
    return ["--auth-token", OPERATOR, "--api-keys-file", str(keys_file)]


def code_of(call, request, metadata) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        call(request, metadata=metadata, timeout=30)
    return error.value.code()


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
