"""The learner's files and jobs API: validation that fails fast and changes nothing."""

from __future__ import annotations

import grpc
import pytest
from jobs_client import jobs_stub, learner_args, reinforcement_request, upload, write_jsonl
from rft.learner.v1 import files_pb2, files_pb2_grpc
from rft.learner.v1 import fine_tuning_pb2 as ft
from service_process import ServiceProcess

GOOD = {"messages": [{"role": "user", "content": "2+2="}], "answer": "4"}
SPEC = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


@pytest.fixture
def learner(tmp_path):
    # Remote services are unreachable on purpose: these checks come first.
    args = learner_args(tmp_path / "data") + ["--rollout-addresses", "127.0.0.1:1", "--grader-address", "127.0.0.1:1"]
    with ServiceProcess("rft-learner", args) as proc, proc.channel() as channel:
        yield channel


def test_bad_lines_are_reported_and_nothing_is_stored(learner, tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"messages": [{"role": "user", "content": "ok"}], "answer": "1"}',
                "{not json",
                '{"messages": []}',
                '{"messages": [{"role": "robot", "content": "x"}]}',
                '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}',
                '{"answer": "no messages"}',
            ]
        )
    )
    with pytest.raises(grpc.RpcError) as error:
        upload(learner, path)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.value.details()
    for expected in (
        "line 2: invalid JSON",
        "line 3: 'messages' must be a non-empty list",
        "line 4: messages[0].role is 'robot'",
        "line 5: the last message must be from the user",
        "line 6: missing field 'messages'",
    ):
        assert expected in details
    assert "line 1" not in details
    listed = files_pb2_grpc.FilesServiceStub(learner).ListFiles(files_pb2.ListFilesRequest(), timeout=10)
    assert list(listed.files) == []


def test_create_job_fails_fast_naming_the_field(learner, tmp_path, tiny_model) -> None:
    train = upload(learner, write_jsonl(tmp_path / "train.jsonl", [GOOD] * 4))
    stub = jobs_stub(learner)

    def create_error(request) -> str:
        with pytest.raises(grpc.RpcError) as error:
            stub.CreateJob(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return error.value.details()

    assert "model:" in create_error(reinforcement_request(str(tmp_path / "nowhere"), train.id, "", SPEC))
    escape = reinforcement_request(str(tiny_model), train.id, "", SPEC)
    escape.suffix = "x/../../../../tmp/owned"  # would put the exported model outside the data directory
    assert "suffix:" in create_error(escape)
    assert "training_file: no file" in create_error(reinforcement_request(str(tiny_model), "file-missing", "", SPEC))
    assert "clip_range" in create_error(reinforcement_request(str(tiny_model), train.id, "", SPEC, clip_range=5.0))
    assert "group_size" in create_error(reinforcement_request(str(tiny_model), train.id, "", SPEC, group_size=1))
    warmup_without_field = reinforcement_request(str(tiny_model), train.id, "", SPEC, sft_warmup_epochs=1)
    assert "sft_answer_field" in create_error(warmup_without_field)
    missing_field = reinforcement_request(
        str(tiny_model), train.id, "", SPEC, sft_warmup_epochs=1, sft_answer_field="nope"
    )
    assert "line 1" in create_error(missing_field)
    # Everything local is valid: now the unreachable grader is the problem, named as such.
    assert "grader" in create_error(reinforcement_request(str(tiny_model), train.id, "", SPEC))
    assert list(stub.ListJobs(ft.ListJobsRequest(), timeout=10).jobs) == []


def test_unknown_job_is_not_found(learner) -> None:
    stub = jobs_stub(learner)
    for call, request in (
        (stub.GetJob, ft.GetJobRequest(job_id="ftjob-nope")),
        (stub.CancelJob, ft.CancelJobRequest(job_id="ftjob-nope")),
        (stub.ListCheckpoints, ft.ListCheckpointsRequest(job_id="ftjob-nope")),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call(request, timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
