"""ValidateGrader on our types and OpenAI's finer fields: every problem, with its path."""

from __future__ import annotations

import pytest
from graderlib import issue_fields, similarity, validate

JUDGE_INPUT = [{"role": "user", "content": "{{sample.output_text}}"}]


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ({"type": "python", "name": "p", "source": "def grader(sample, item):\n    return 1\n"}, ["source"]),
        ({"type": "python", "name": "p", "source": "def grade(sample, item) return 1"}, ["source"]),
        ({"type": "python", "name": "p", "source": "# x\n" * 70_000 + "def grade(s, i):\n    return 1\n"}, ["source"]),
        ({"type": "python", "name": "p", "source": "def grade(s, i):\n    return 1\n", "range": [1, 0]}, ["range"]),
        (similarity("cosine"), ["evaluation_metric"]),
        (similarity("rouge_9"), ["evaluation_metric"]),
        (
            {
                "type": "score_model",
                "name": "j",
                "model": "m",
                "input": JUDGE_INPUT,
                "range": [0, 5],
                "pass_threshold": 6,
            },
            ["pass_threshold"],
        ),
        (
            {"type": "score_model", "name": "j", "model": "m", "input": [{"role": "robot", "content": "x"}]},
            ["input.0.role"],
        ),
        (
            {
                "type": "score_model",
                "name": "j",
                "model": "m",
                "input": JUDGE_INPUT,
                "sampling_params": {"temperature": 9},
            },
            ["sampling_params.temperature"],
        ),
        (
            {
                "type": "label_model",
                "name": "l",
                "model": "m",
                "input": JUDGE_INPUT,
                "labels": ["a"],
                "passing_labels": ["b"],
            },
            ["passing_labels.0"],
        ),
        ({"type": "json_check", "name": "j", "input": "{{sample.output_text}}"}, ["schema"]),
        ({"type": "json_check", "name": "j", "input": "{{sample.output_text}}", "schema": {"type": 5}}, ["schema"]),
        (
            {
                "type": "ranked_list",
                "name": "r",
                "input": "{{sample.output_text}}",
                "reference": "{{item.x}}",
                "score_metric": "top@3",
            },
            ["score_metric"],
        ),
        (
            {
                "type": "math_equivalence",
                "name": "m",
                "input": "{{sample.output_text}}",
                "reference": "{{item.x}}",
                "float_rounding": 99,
            },
            ["float_rounding"],
        ),
    ],
)
def test_invalid_specs_name_the_field(stub, spec: dict, fields: list[str]) -> None:
    response = validate(stub, spec)
    assert not response.valid
    assert issue_fields(response) == fields
    assert response.grader_type == spec["type"]


def test_openai_python_grader_with_image_tag_is_valid(stub) -> None:
    spec = {
        "type": "python",
        "name": "p",
        "source": "def grade(sample, item):\n    return 1.0\n",
        "image_tag": "2025-05-08",
    }
    issues = validate(stub, spec).issues
    # Valid; on a host without a usable sandbox the only issue is that python is disabled.
    assert all(i.field == "type" and "disabled" in i.message for i in issues), issues


def test_issues_from_several_sub_graders_come_together(stub) -> None:
    spec = {
        "type": "multi",
        "name": "m",
        "graders": {
            "a": {**similarity("bleu"), "input": "{{sample.output}}"},
            "b": {"type": "json_check", "name": "j", "input": "x", "fields": {"": 1}},
        },
        "calculate_output": "a + b + c",
        "colour": "blue",
    }
    assert sorted(issue_fields(validate(stub, spec))) == [
        "calculate_output",
        "colour",
        "graders.a.input",
        "graders.b.fields.",
    ]
