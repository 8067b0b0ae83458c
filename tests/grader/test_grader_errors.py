"""Failures are per-sample errors with a kind and a reason, or a clear status for a bad
request; the service keeps serving and the next honest grade is right."""

from __future__ import annotations

import re

import grpc
import pytest
from graderlib import grade, grade_request, scores, similarity, status_of, string_check
from rft_common.tenancy import tenant_label


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_a_hanging_metric_is_a_timeout_and_the_rest_of_the_batch_is_graded(stub) -> None:
    # ROUGE-L is quadratic: 20k x 20k words runs far past the 3 s per-sample limit.
    huge = " ".join(f"w{i % 50}" for i in range(20_000))
    items = [("a b", {"reference": "a b"}), (huge, {"reference": huge[::-1]}), ("a c", {"reference": "a b"})]
    response = grade(stub, similarity("rouge_l"), items)
    assert scores(response) == [1.0, "TIMEOUT", 0.5]
    assert "longer than 3 s" in response.results[1].error.message
    assert scores(grade(stub, similarity("rouge_l"), [("x y", {"reference": "x y"})])) == [1.0]


def test_oversized_output_is_invalid_input(stub) -> None:
    response = grade(stub, string_check("like"), [("x" * 100_001, {"answer": "x"}), ("x", {"answer": "x"})])
    assert scores(response) == ["INVALID_INPUT", 1.0]
    assert "100000" in response.results[0].error.message


def test_oversized_batch_is_invalid_argument(stub) -> None:
    with pytest.raises(grpc.RpcError) as error:
        grade(stub, string_check(), [("x", {"answer": "x"})] * 301)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 300" in error.value.details()


def test_invalid_inline_spec_is_invalid_argument_naming_the_fields(stub) -> None:
    spec = {**string_check(), "operation": "equals", "refrence": "x"}
    with pytest.raises(grpc.RpcError) as error:
        grade(stub, spec, [("x", {"answer": "x"})])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "operation" in error.value.details() and "refrence: unknown field" in error.value.details()


def test_bad_tenant_and_missing_grader_are_rejected(stub) -> None:
    assert status_of(stub.Grade, grade_request(string_check(), [], tenant="../etc")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(stub.Grade, grade_request(None, [("x", {})])) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(stub.Grade, grade_request(None, [], grader_id="grader-nope")) == grpc.StatusCode.NOT_FOUND


def test_prometheus_metrics(stub, grader_service) -> None:
    grade(stub, string_check(), [("x", {"answer": "x"}), ("x", {})] * 3, tenant="metrics-tenant")
    text = grader_service.metrics()
    labels = {"type": "string_check", "tenant": tenant_label("metrics-tenant")}
    assert "metrics-tenant" not in text  # /metrics is read without credentials: pseudonyms only
    assert metric(text, "rft_grader_grades_total", **labels, outcome="ok") == 3.0
    assert metric(text, "rft_grader_grades_total", **labels, outcome="template") == 3.0
    assert metric(text, "rft_grader_grade_seconds_count", type="string_check") >= 1
    assert "rft_grader_batch_size_bucket" in text
