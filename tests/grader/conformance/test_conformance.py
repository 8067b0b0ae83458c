"""Conformance of any rft.grader.v1 implementation: OpenAI grader semantics for
string_check, text_similarity and multi, validation with field paths, the tenant
registry, per-sample errors, ListGraderTypes. Expected scores are worked out by hand."""

from __future__ import annotations

import math

import grpc
import pytest
from graderlib import (
    grade,
    grade_request,
    issue_fields,
    register,
    require,
    scores,
    similarity,
    spec_dict,
    status_of,
    string_check,
    types,
    validate,
)
from rft.grader.v1 import grader_pb2

NOT_FOUND = grpc.StatusCode.NOT_FOUND

# A valid spec of each OpenAI type, to check that a listed-but-disabled type is refused.
OPENAI_SAMPLES = {
    "string_check": string_check(),
    "text_similarity": similarity("fuzzy_match"),
    "python": {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"},
    "score_model": {
        "type": "score_model",
        "name": "judge",
        "model": "m",
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
    },
    "label_model": {
        "type": "label_model",
        "name": "labeler",
        "model": "m",
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
        "labels": ["good", "bad"],
        "passing_labels": ["good"],
    },
}


def multi(graders: dict, calculate_output: str) -> dict:
    return {"type": "multi", "name": "combined", "graders": graders, "calculate_output": calculate_output}


# --- ListGraderTypes -------------------------------------------------------------------


def test_grader_types_include_string_check_and_multi(stub) -> None:
    listed = stub.ListGraderTypes(grader_pb2.ListGraderTypesRequest(), timeout=30).types
    names = [t.name for t in listed]
    assert len(names) == len(set(names))
    by_name = {t.name: t for t in listed}
    for required in ("string_check", "multi"):
        assert by_name[required].enabled and by_name[required].openai_compatible
    assert all(t.description for t in listed)


def test_disabled_types_are_refused_with_failed_precondition(stub, tenant) -> None:
    disabled = [t.name for t in types(stub).values() if not t.enabled and t.name in OPENAI_SAMPLES]
    if not disabled:
        pytest.skip("every OpenAI type is enabled on the server under test")
    for kind in disabled:
        request = grade_request(OPENAI_SAMPLES[kind], [("x", {})], tenant=tenant)
        assert status_of(stub.Grade, request, timeout=30) == grpc.StatusCode.FAILED_PRECONDITION, kind


# --- string_check and templates ---------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("eq", [1.0, 0.0, 0.0, 0.0]),
        ("ne", [0.0, 1.0, 1.0, 1.0]),
        ("like", [1.0, 0.0, 1.0, 0.0]),
        ("ilike", [1.0, 1.0, 1.0, 0.0]),
    ],
)
def test_string_check(stub, tenant, operation: str, expected: list[float]) -> None:
    items = [
        ("Paris", {"answer": "Paris"}),
        ("PARIS", {"answer": "Paris"}),
        ("In Paris.", {"answer": "Paris"}),
        ("Rome", {"answer": "Paris"}),
    ]
    response = grade(stub, string_check(operation), items, tenant=tenant)
    assert response.grader_type == "string_check"
    assert scores(response) == expected
    assert [r.passed for r in response.results] == [score == 1.0 for score in expected]


def test_templates_reach_nested_fields_numbers_and_output_json(stub, tenant) -> None:
    spec = string_check("eq", reference="{{item.a.b}}/{{item.n}}")
    assert scores(grade(stub, spec, [("x/4", {"a": {"b": "x"}, "n": 4})], tenant=tenant)) == [1.0]
    json_spec = {**string_check("eq", reference="{{item.city}}"), "input": "{{sample.output_json.city}}"}
    response = grade(
        stub,
        json_spec,
        [("", {"city": "Oslo"}, {"city": "Oslo"}), ("", {"city": "Oslo"}, {"city": "Rome"})],
        tenant=tenant,
    )
    assert scores(response) == [1.0, 0.0]


def test_a_missing_template_field_is_an_error_on_that_sample_only(stub, tenant) -> None:
    response = grade(
        stub, string_check(), [("4", {"answer": "4"}), ("4", {"wrong": "4"}), ("5", {"answer": "4"})], tenant=tenant
    )
    assert scores(response) == [1.0, "TEMPLATE", 0.0]
    assert response.results[1].error.message


# --- multi -------------------------------------------------------------------------------


def test_multi_calculate_output(stub, tenant) -> None:
    spec = multi(
        {"a": string_check("eq"), "b": string_check("ilike")},
        "2 * a - b^2 + max(a, b) / 4 + abs(-1) + sqrt(4) + exp(0) + log(1) + floor(0.5) + ceil(0.5) + min(a, b, 3)",
    )
    response = grade(stub, spec, [("paris", {"answer": "Paris"}), ("Paris", {"answer": "Paris"})], tenant=tenant)
    # a=0, b=1: 0 - 1 + 1/4 + 1 + 2 + 1 + 0 + 0 + 1 + 0 = 4.25; a=b=1: 2 - 1 + 1/4 + 1 + 2 + 1 + 0 + 0 + 1 + 1 = 7.25
    assert scores(response) == [4.25, 7.25]
    assert dict(response.results[0].sub_scores) == {"a": 0.0, "b": 1.0}
    assert response.grader_type == "multi"


def test_multi_precedence(stub, tenant) -> None:
    spec = multi({"a": string_check("eq")}, "-2^2 + 2^3^2 / 64 + (1 + a) * 3")
    # -(2^2) + 2^(3^2)/64 + (1 + 1) * 3 = -4 + 8 + 6
    assert scores(grade(stub, spec, [("x", {"answer": "x"})], tenant=tenant)) == [10.0]


def test_multi_errors_are_not_scores(stub, tenant) -> None:
    spec = multi({"a": string_check("eq"), "b": string_check("ne")}, "a / b")
    response = grade(stub, spec, [("x", {"answer": "x"}), ("x", {"answer": "y"}), ("x", {})], tenant=tenant)
    assert scores(response) == ["INVALID_SCORE", 0.0, "TEMPLATE"]


# --- text_similarity (optional for other implementations) -------------------------------


def test_text_similarity(stub, tenant) -> None:
    require(stub, "text_similarity")
    items = [("the cat sat", {"reference": "the cat ran"})]
    assert scores(grade(stub, similarity("rouge_1"), items, tenant=tenant)) == pytest.approx([2 / 3])
    assert scores(grade(stub, similarity("fuzzy_match"), [("Paris", {"reference": "Paris"})], tenant=tenant)) == [1.0]
    response = grade(stub, similarity("rouge_l", pass_threshold=0.5), items, tenant=tenant)
    assert response.results[0].passed


# --- validation ----------------------------------------------------------------------------


def test_validation_accepts_a_valid_spec(stub, tenant) -> None:
    response = validate(stub, multi({"a": string_check()}, "a"), tenant=tenant)
    assert (response.valid, list(response.issues), response.grader_type) == (True, [], "multi")


def test_validation_lists_every_issue_with_its_field(stub, tenant) -> None:
    spec = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "x", "operation": "equals"}
    response = validate(stub, spec, tenant=tenant)
    assert not response.valid and response.grader_type == "string_check"
    assert {"name", "operation"} <= set(issue_fields(response))
    assert all(issue.message for issue in response.issues)

    nested = multi({"exact": {**string_check(), "operation": "bad"}, "fine": string_check()}, "exact + missing")
    assert {"graders.exact.operation", "calculate_output"} <= set(issue_fields(validate(stub, nested, tenant=tenant)))
    assert issue_fields(validate(stub, {"type": "no_such_type", "name": "x"}, tenant=tenant)) == ["type"]
    assert "input" in issue_fields(validate(stub, {**string_check(), "input": "{{nowhere.x}}"}, tenant=tenant))


def test_grading_an_invalid_spec_is_invalid_argument(stub, tenant) -> None:
    request = grade_request({**string_check(), "operation": "bad"}, [("x", {"answer": "x"})], tenant=tenant)
    assert status_of(stub.Grade, request, timeout=30) == grpc.StatusCode.INVALID_ARGUMENT


# --- registry and tenancy -------------------------------------------------------------------


def test_registry_lifecycle(stub, tenant) -> None:
    created = [register(stub, f"grader-{i}", string_check("eq"), tenant=tenant) for i in range(3)]
    assert len({g.id for g in created}) == 3
    assert all(g.tenant == tenant and g.type == "string_check" for g in created)
    assert spec_dict(created[0]) == string_check("eq")

    first = stub.ListGraders(grader_pb2.ListGradersRequest(tenant=tenant, page_size=2), timeout=30)
    assert [g.name for g in first.graders] == ["grader-2", "grader-1"]  # newest first
    assert first.next_page_token
    second = stub.ListGraders(
        grader_pb2.ListGradersRequest(tenant=tenant, page_size=2, page_token=first.next_page_token), timeout=30
    )
    assert [g.name for g in second.graders] == ["grader-0"]
    assert second.next_page_token == ""

    got = stub.GetGrader(grader_pb2.GetGraderRequest(tenant=tenant, grader_id=created[1].id), timeout=30).grader
    assert (got.id, got.name) == (created[1].id, "grader-1")
    by_id = grade(stub, None, [("a", {"answer": "a"}), ("a", {"answer": "b"})], tenant=tenant, grader_id=got.id)
    assert scores(by_id) == [1.0, 0.0]

    duplicate = grader_pb2.RegisterGraderRequest(tenant=tenant, name="grader-1")
    duplicate.spec.update(string_check())
    assert status_of(stub.RegisterGrader, duplicate, timeout=30) == grpc.StatusCode.ALREADY_EXISTS

    delete = grader_pb2.DeleteGraderRequest(tenant=tenant, grader_id=created[1].id)
    stub.DeleteGrader(delete, timeout=30)
    get = grader_pb2.GetGraderRequest(tenant=tenant, grader_id=created[1].id)
    assert status_of(stub.GetGrader, get, timeout=30) == NOT_FOUND
    assert status_of(stub.DeleteGrader, delete, timeout=30) == NOT_FOUND
    remaining = stub.ListGraders(grader_pb2.ListGradersRequest(tenant=tenant), timeout=30).graders
    assert [g.name for g in remaining] == ["grader-2", "grader-0"]


def test_register_refuses_an_invalid_spec_and_stores_nothing(stub, tenant) -> None:
    request = grader_pb2.RegisterGraderRequest(tenant=tenant, name="broken")
    request.spec.update({**string_check(), "operation": "bad"})
    assert status_of(stub.RegisterGrader, request, timeout=30) == grpc.StatusCode.INVALID_ARGUMENT
    assert list(stub.ListGraders(grader_pb2.ListGradersRequest(tenant=tenant), timeout=30).graders) == []


def test_tenants_cannot_see_or_use_each_others_graders(stub, tenant) -> None:
    owned = register(stub, "private", string_check(), tenant=tenant)
    other = tenant + "-other"
    get = grader_pb2.GetGraderRequest(tenant=other, grader_id=owned.id)
    assert status_of(stub.GetGrader, get, timeout=30) == NOT_FOUND
    assert (
        status_of(
            stub.Grade, grade_request(None, [("x", {"answer": "x"})], tenant=other, grader_id=owned.id), timeout=30
        )
        == NOT_FOUND
    )
    delete = grader_pb2.DeleteGraderRequest(tenant=other, grader_id=owned.id)
    assert status_of(stub.DeleteGrader, delete, timeout=30) == NOT_FOUND
    assert list(stub.ListGraders(grader_pb2.ListGradersRequest(tenant=other), timeout=30).graders) == []
    # The same name is free in another tenant, and the owner still has theirs.
    assert register(stub, "private", string_check(), tenant=other).id != owned.id
    mine = grader_pb2.GetGraderRequest(tenant=tenant, grader_id=owned.id)
    assert stub.GetGrader(mine, timeout=30).grader.id == owned.id


def test_unknown_grader_id_is_not_found(stub, tenant) -> None:
    request = grade_request(None, [("x", {})], tenant=tenant, grader_id="no-such-grader")
    assert status_of(stub.Grade, request, timeout=30) == NOT_FOUND


# --- python (optional: needs a sandbox) ------------------------------------------------------

PYTHON_SOURCE = """
def grade(sample, item):
    kind = item["kind"]
    if kind == "ok":
        return 0.25 + len(sample["output_text"]) / 100
    if kind == "raise":
        raise ValueError("bad answer format")
    if kind == "nan":
        return float("nan")
    if kind == "big":
        return 2.0
    return "not a number"
"""


@pytest.mark.python_grader
def test_python_grader_scores_and_errors(stub, tenant) -> None:
    require(stub, "python")
    spec = {"type": "python", "name": "py", "source": PYTHON_SOURCE}
    kinds = ["ok", "raise", "nan", "big", "str", "ok"]
    response = grade(stub, spec, [("abcde", {"kind": kind}) for kind in kinds], tenant=tenant)
    assert scores(response) == [0.3, "EXCEPTION", "INVALID_SCORE", "INVALID_SCORE", "INVALID_SCORE", 0.3]
    assert "bad answer format" in response.results[1].error.message
    assert all(math.isfinite(r.score) for r in response.results)
