"""Registered graders survive a restart of the real process; disabled types are refused
with FAILED_PRECONDITION and say why."""

from __future__ import annotations

import grpc
import pytest
from graderlib import Stub, grade, grade_request, register, scores, spec_dict, status_of, string_check, types, validate
from rft.grader.v1 import grader_pb2
from service_process import ServiceProcess

PYTHON = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
JUDGE = {
    "type": "score_model",
    "name": "judge",
    "model": "m",
    "input": [{"role": "user", "content": "{{sample.output_text}}"}],
}


def test_registry_survives_restart_and_stays_tenant_scoped(tmp_path) -> None:
    args = ["--data-dir", str(tmp_path)]
    with ServiceProcess("rft-grader", args) as proc, proc.channel() as channel:
        stub = Stub(channel)
        kept = register(stub, "exact", string_check("eq"), tenant="acme")
        dropped = register(stub, "loose", string_check("ilike"), tenant="acme")
        stub.DeleteGrader(grader_pb2.DeleteGraderRequest(tenant="acme", grader_id=dropped.id), timeout=10)

    with ServiceProcess("rft-grader", args) as proc, proc.channel() as channel:
        stub = Stub(channel)
        got = stub.GetGrader(grader_pb2.GetGraderRequest(tenant="acme", grader_id=kept.id), timeout=10).grader
        assert (got.name, got.type, got.tenant, spec_dict(got)) == ("exact", "string_check", "acme", string_check("eq"))
        assert got.create_time == kept.create_time
        assert scores(grade(stub, None, [("4", {"answer": 4})], tenant="acme", grader_id=kept.id)) == [1.0]
        listed = stub.ListGraders(grader_pb2.ListGradersRequest(tenant="acme"), timeout=10).graders
        assert [g.id for g in listed] == [kept.id]
        get_deleted = grader_pb2.GetGraderRequest(tenant="acme", grader_id=dropped.id)
        assert status_of(stub.GetGrader, get_deleted, timeout=10) == grpc.StatusCode.NOT_FOUND
        get_other = grader_pb2.GetGraderRequest(tenant="globex", grader_id=kept.id)
        assert status_of(stub.GetGrader, get_other, timeout=10) == grpc.StatusCode.NOT_FOUND


def test_disabled_types_fail_precondition_with_the_reason(tmp_path) -> None:
    # No --model-base-url: score_model and label_model cannot run here; no bubblewrap
    # (and no weaker mode chosen): python cannot either.
    args = ["--data-dir", str(tmp_path), "--sandbox-bwrap-path", str(tmp_path / "no-bwrap")]
    with ServiceProcess("rft-grader", args) as proc, proc.channel() as channel:
        stub = Stub(channel)
        listed = types(stub)
        assert not listed["score_model"].enabled and "--model-base-url" in listed["score_model"].description
        assert not listed["python"].enabled and "bubblewrap" in listed["python"].description
        assert listed["string_check"].enabled
        with pytest.raises(grpc.RpcError) as error:
            grade(stub, PYTHON, [("x", {})])
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "bubblewrap" in error.value.details()
        request = grader_pb2.RegisterGraderRequest(tenant="acme", name="judge")
        request.spec.update(JUDGE)
        assert status_of(stub.RegisterGrader, request, timeout=10) == grpc.StatusCode.FAILED_PRECONDITION
        multi = {"type": "multi", "name": "m", "graders": {"judge": JUDGE}, "calculate_output": "judge"}
        for spec in (JUDGE, multi):
            code = status_of(stub.Grade, grade_request(spec, [("x", {})]), timeout=10)
            assert code == grpc.StatusCode.FAILED_PRECONDITION
        response = validate(stub, multi)
        assert not response.valid
        assert [(i.field, "disabled" in i.message) for i in response.issues] == [("graders.judge.type", True)]
        listed = stub.ListGraders(grader_pb2.ListGradersRequest(tenant="acme"), timeout=10).graders
        assert list(listed) == []  # the refused registration stored nothing
