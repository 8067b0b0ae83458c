"""The core's pure pieces, driven directly: calculate_output, templates, list and reply parsing."""

from __future__ import annotations

import math

import pytest
from rft_grader.domain import Sample
from rft_grader.expression import Expression, ExpressionError, ExpressionSyntaxError
from rft_grader.graders.model_graders import parse_label, parse_score
from rft_grader.graders.ranked_list import parse_list
from rft_grader.templates import Template, TemplateError, template_problems

SCORES = {"a": 0.5, "b": 1.0, "c": 2.0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a + b * c", 2.5),
        ("(a + b) * c", 3.0),
        ("-2^2", -4.0),
        ("2^3^2", 512.0),
        ("c^-1", 0.5),
        ("a - -b", 1.5),
        ("min(a, b, c) + max(c)", 2.5),
        ("floor(2.7) + ceil(0.2) + abs(-a)", 3.5),
        ("log(exp(c)) * sqrt(4)", 4.0),
        ("1e1 / .5", 20.0),
    ],
)
def test_expression_values(text: str, expected: float) -> None:
    assert Expression(text, set(SCORES)).evaluate(SCORES) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a +", "position 3"),
        ("d + 1", "unknown name 'd'"),
        ("__import__(a)", "unknown function '__import__'"),
        ("eval('1')", "unexpected character"),
        ("a.b", "unexpected character '.'"),
        ("abs(a, b)", "takes 1 argument"),
        ("log", "needs arguments"),
        ("(" * 70 + "a" + ")" * 70, "deeper than 64"),
        ("+".join(["a"] * 300), "more than 512 tokens"),
        ("", "empty"),
    ],
)
def test_expression_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(ExpressionSyntaxError, match=message.replace("(", r"\(")):
        Expression(text, set(SCORES))


@pytest.mark.parametrize("text", ["a / (b - 1)", "log(b - 1)", "9^9^9", "(0 - a)^0.5", "sqrt(-a)", "exp(1000)"])
def test_expression_without_a_finite_value_raises(text: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(text, set(SCORES)).evaluate(SCORES)


def test_template_rendering_and_raw_values() -> None:
    sample = Sample('{"x": {"y": [1, 2.5]}}')
    item = {"n": 4, "f": 0.5, "flag": True, "none": None, "obj": {"k": "v"}, "list": ["p", "q"]}
    text = (
        "{{item.n}} {{item.f}} {{item.flag}} {{item.none}} {{item.obj}} {{item.list.1}} {{ sample.output_json.x.y.1 }}"
    )
    assert Template(text).render(sample, item) == '4 0.5 true null {"k":"v"} q 2.5'
    assert Template("{{item.list}}").value(sample, item) == ["p", "q"]
    assert Template("{{sample.output_text}}").render(sample, item) == sample.output_text
    with pytest.raises(TemplateError, match="item has no field 'missing'"):
        Template("{{item.missing}}").render(sample, item)
    with pytest.raises(TemplateError, match="output_json"):
        Template("{{sample.output_json.x}}").render(Sample("plain text"), item)


def test_template_problems() -> None:
    assert template_problems("{{item.a}} and {{ sample.output_json.b }}") == []
    assert len(template_problems("{{items.a}}")) == 1
    assert "output_text, output_json, output_tools, output_messages" in template_problems("{{sample.answer}}")[0]
    assert "closing" in template_problems("{{item.a")[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1. BRCA1\n2) TP53\n- EGFR\n\n* 'KRAS'", ["BRCA1", "TP53", "EGFR", "KRAS"]),
        ('["a", "b", 3]', ["a", "b", "3"]),
        ("a, b ,c", ["a", "b", "c"]),
        (["x", 2.0], ["x", "2"]),
        ("single", ["single"]),
        ("", []),
    ],
)
def test_ranked_list_parsing(value, expected: list[str]) -> None:
    assert parse_list(value) == expected


def test_model_reply_parsing() -> None:
    assert parse_score('{"result": 7, "steps": ["..."]}') == 7.0
    assert parse_score('Here: ```json\n{"score": 0.25}\n```') == 0.25
    assert parse_score("  0.75 ") == 0.75
    assert math.isnan(parse_score("NaN"))  # refused later as INVALID_SCORE
    assert parse_score("about seven") is None
    assert parse_score('{"result": true}') is None
    labels = ["Yes", "No", "no answer"]
    assert parse_label('{"label": "No"}', labels) == "No"
    assert parse_label('"yes".', labels) == "Yes"
    assert parse_label("No Answer", labels) == "no answer"
    assert parse_label("maybe", labels) is None
