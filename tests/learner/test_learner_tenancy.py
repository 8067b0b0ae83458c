"""Tenants come from credentials, on the gRPC services too: a tenant's API key acts for its
own tenant only (the request's tenant field may narrow to it, never choose another),
while the service token is the operator's and acts for any tenant."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from rft.learner.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2_grpc
from rft.learner.v1 import fine_tuning_pb2 as ft
from service_process import ServiceProcess
from tenant_keys import KEYS, OPERATOR, SPEC, auth, code_of, service_args


@pytest.fixture(scope="module")
def keys_args(tmp_path_factory) -> list[str]:
    return service_args(tmp_path_factory.mktemp("keys"))


def upload(channel, secret: str, name: str) -> files_pb2.File:
    line = b'{"messages": [{"role": "user", "content": "hi"}], "answer": "7"}\n'

    def requests():
        yield files_pb2.UploadFileRequest(header=files_pb2.UploadFileHeader(filename=name, purpose=1))
        yield files_pb2.UploadFileRequest(chunk=line * 4)

    return files_pb2_grpc.FilesServiceStub(channel).UploadFile(requests(), metadata=auth(secret), timeout=30).file


def test_learner_files_and_jobs_belong_to_the_keys_tenant(keys_args, tiny_model, tmp_path) -> None:
    args = ["--data-dir", str(tmp_path), "--model-catalogue", f"tiny={tiny_model}", *keys_args]
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        files = files_pb2_grpc.FilesServiceStub(channel)
        jobs = fine_tuning_pb2_grpc.FineTuningServiceStub(channel)
        alices = upload(channel, KEYS["alice"], "a.jsonl")
        bob = auth(KEYS["bob"])
        assert code_of(files.GetFile, files_pb2.GetFileRequest(file_id=alices.id), bob) == grpc.StatusCode.NOT_FOUND
        assert code_of(files.DeleteFile, files_pb2.DeleteFileRequest(file_id=alices.id), bob) == (
            grpc.StatusCode.NOT_FOUND
        )
        assert list(files.ListFiles(files_pb2.ListFilesRequest(), metadata=bob, timeout=30).files) == []
        operator_view = files.ListFiles(files_pb2.ListFilesRequest(), metadata=auth(OPERATOR), timeout=30)
        assert [f.id for f in operator_view.files] == [alices.id]

        # Bob can neither train on alice's file nor grade as alice.
        request = ft.CreateJobRequest(model="tiny", training_file=alices.id)
        request.method.reinforcement.grader.spec.update(SPEC)
        request.method.reinforcement.grader.tenant = "alice"
        assert code_of(jobs.CreateJob, request, bob) == grpc.StatusCode.PERMISSION_DENIED
        request.method.reinforcement.grader.tenant = ""
        request.method.reinforcement.grader.service_address = "127.0.0.1:1"
        assert code_of(jobs.CreateJob, request, bob) == grpc.StatusCode.PERMISSION_DENIED
        request.method.reinforcement.grader.service_address = ""
        request.model = str(tiny_model)  # a tenant names models, never server paths
        with pytest.raises(grpc.RpcError) as by_path:
            jobs.CreateJob(request, metadata=bob, timeout=60)
        assert by_path.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not exist" in by_path.value.details()
        request.model = "tiny"
        with pytest.raises(grpc.RpcError) as refused:
            jobs.CreateJob(request, metadata=bob, timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("training_file: no file"), refused.value.details()
        assert list(jobs.ListJobs(ft.ListJobsRequest(), metadata=bob, timeout=30).jobs) == []


def test_the_grader_token_goes_only_to_the_configured_grader(monkeypatch, tmp_path) -> None:
    """A job may name another rft.grader.v1 service; the learner's grader token is not sent
    there (it would hand the operator's credential to whoever runs that address)."""
    from rft_learner import remote
    from rft_learner.trainer.loop import TrainerSettings, grader_client

    sent: dict[str, str] = {}

    def record_channel(address, **options):
        sent[address] = options.get("token", "")
        return grpc.aio.insecure_channel(address)

    monkeypatch.setattr(remote, "aio_channel", record_channel)
    settings = TrainerSettings(tmp_path, "127.0.0.1:1", "grader.internal:50052", 10, grader_token="operator-secret")
    configured = ft.GraderConfig()
    elsewhere = ft.GraderConfig(service_address="grader.attacker.example:443")

    async def make_clients() -> None:  # grpc.aio channels belong to an event loop
        for client in (grader_client(configured, settings, 1.0), grader_client(elsewhere, settings, 1.0)):
            await client.close()

    asyncio.run(make_clients())
    assert sent == {"grader.internal:50052": "operator-secret", "grader.attacker.example:443": ""}
