"""Tenants come from credentials, on the gRPC services too: a tenant's API key acts for its
own tenant only (the request's tenant field may narrow to it, never choose another),
while the service token is the operator's and acts for any tenant."""

from __future__ import annotations

import pathlib

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


def test_a_client_certificate_names_its_tenant_under_mutual_tls(tmp_path) -> None:
    """With --tls-client-ca-file, a keys-file line '<tenant> x509:<common name>' makes a
    verified client certificate act as that tenant, without a bearer key."""
    import subprocess
    import sys
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    pki = tmp_path / "pki"
    make_secrets = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "make_secrets.py"
    subprocess.run([sys.executable, str(make_secrets), str(pki)], check=True, capture_output=True)
    keys = tmp_path / "keys"
    keys.write_text("alice x509:rft-rollout\n")  # the rollout's certificate stands in for alice's client
    args = ["--data-dir", str(tmp_path / "data"), "--api-keys-file", str(keys), "--auth-token", OPERATOR]
    args += ["--tls-cert-file", str(pki / "grader.crt"), "--tls-key-file", str(pki / "grader.key")]
    args += ["--tls-client-ca-file", str(pki / "ca.crt")]

    def channel_as(name: str) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            (pki / "ca.crt").read_bytes(), (pki / f"{name}.key").read_bytes(), (pki / f"{name}.crt").read_bytes()
        )
        return grpc.secure_channel(grader.address, credentials, [("grpc.ssl_target_name_override", "rft-grader")])

    with ServiceProcess("rft-grader", args, wait_serving=False) as grader:
        deadline = time.monotonic() + 60
        while True:
            try:
                with channel_as("rollout") as channel:
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                break
            except grpc.RpcError:
                assert grader.proc.poll() is None and time.monotonic() < deadline, grader.logs()
                time.sleep(0.3)
        request = grader_pb2.RegisterGraderRequest(name="judge")
        request.spec.update(SPEC)
        with channel_as("rollout") as alice:
            stub = grader_pb2_grpc.GraderServiceStub(alice)
            assert stub.RegisterGrader(request, timeout=30).grader.tenant == "alice"
            denied = grader_pb2.ListGradersRequest(tenant="bob")
            assert code_of(stub.ListGraders, denied, ()) == grpc.StatusCode.PERMISSION_DENIED
        with channel_as("learner") as stranger:  # a certificate the CA signed, but no tenant's
            stub = grader_pb2_grpc.GraderServiceStub(stranger)
            assert code_of(stub.ListGraders, grader_pb2.ListGradersRequest(), ()) == grpc.StatusCode.UNAUTHENTICATED
            listed = stub.ListGraders(
                grader_pb2.ListGradersRequest(tenant="alice"), metadata=auth(OPERATOR), timeout=30
            )
            assert [g.name for g in listed.graders] == ["judge"]
