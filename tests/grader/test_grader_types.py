"""Every grader type through the real service, with scores checked by hand."""

from __future__ import annotations

import pytest
from graderlib import grade, require, scores, similarity, string_check


def test_string_check_operations(stub) -> None:
    items = [("Paris", {"answer": "Paris"}), ("paris", {"answer": "Paris"}), ("It is Paris.", {"answer": "Paris"})]
    assert scores(grade(stub, string_check("eq"), items)) == [1.0, 0.0, 0.0]
    assert scores(grade(stub, string_check("ne"), items)) == [0.0, 1.0, 1.0]
    assert scores(grade(stub, string_check("like"), items)) == [1.0, 0.0, 1.0]
    assert scores(grade(stub, string_check("ilike"), items)) == [1.0, 1.0, 1.0]
    response = grade(stub, string_check("eq"), items)
    assert response.grader_type == "string_check"
    assert [r.passed for r in response.results] == [True, False, False]


def test_templates_nested_fields_numbers_and_output_json(stub) -> None:
    spec = string_check("eq", reference="{{item.a.b}}-{{item.n}}-{{item.list.1}}")
    items = [("x-4-y", {"a": {"b": "x"}, "n": 4, "list": ["w", "y"]})]
    assert scores(grade(stub, spec, items)) == [1.0]
    json_spec = {**string_check("eq", reference="{{item.city}}"), "input": "{{sample.output_json.city}}"}
    # output_json given by the client, or parsed from output_text when that is a JSON object
    given = grade(stub, json_spec, [("ignored", {"city": "Oslo"}, {"city": "Oslo"})])
    parsed = grade(stub, json_spec, [('{"city": "Oslo"}', {"city": "Oslo"})])
    assert scores(given) == scores(parsed) == [1.0]


def test_missing_template_field_is_a_template_error_of_that_sample_only(stub) -> None:
    response = grade(stub, string_check("eq"), [("4", {"answer": "4"}), ("4", {"other": 1}), ("not json", {})])
    assert scores(response) == [1.0, "TEMPLATE", "TEMPLATE"]
    assert "answer" in response.results[1].error.message
    json_spec = {**string_check("eq"), "input": "{{sample.output_json.x}}"}
    response = grade(stub, json_spec, [("not json", {"answer": "4"})])
    assert scores(response) == ["TEMPLATE"]
    assert "output_json" in response.results[0].error.message


@pytest.mark.parametrize(
    ("metric", "text", "reference", "expected"),
    [
        ("fuzzy_match", "Paris", "paris", 1.0),  # default_process lower-cases
        ("bleu", "the cat sat on the mat", "the cat sat on the mat", 1.0),
        # p1 = 5/6, p2 = 3/5, p3 = 2/4, p4 = 1/3, same length (BP = 1): (5/6*3/5*1/2*1/3)^(1/4)
        ("bleu", "the cat sat on a mat", "the cat sat on the mat", (5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25),
        # GLEU: 1..4-grams; hypothesis 6, reference 6, matches {the, cat, the cat} = 3 -> min(3/6, 3/6)
        ("gleu", "the cat sat", "the cat ran", 0.5),
        ("rouge_1", "the cat sat", "the cat ran", 2 / 3),  # P = R = 2/3
        ("rouge_2", "the cat sat", "the cat ran", 1 / 2),  # {the cat} of 2 bigrams each
        ("rouge_l", "the cat sat", "the cat ran", 2 / 3),  # LCS "the cat"
        # METEOR, 3 of 3 words matched in one chunk: Fmean * (1 - 0.5 * (1/3)^3)
        ("meteor", "the quick dog", "the quick dog", 1 - 0.5 / 27),
        # "fast" ~ "quick" only through WordNet synonyms: still 3 matches in 1 chunk
        ("meteor", "the fast dog", "the quick dog", 1 - 0.5 / 27),
        # "slow" matches nothing: 2 of 3, 2 chunks: Fmean 2/3 * (1 - 0.5 * (2/2)^3)
        ("meteor", "the slow dog", "the quick dog", 1 / 3),
    ],
)
def test_text_similarity_metrics(stub, metric: str, text: str, reference: str, expected: float) -> None:
    [score] = scores(grade(stub, similarity(metric), [(text, {"reference": reference})]))
    assert score == pytest.approx(expected, abs=1e-9)


def test_text_similarity_pass_threshold(stub) -> None:
    response = grade(
        stub,
        similarity("rouge_1", pass_threshold=0.6),
        [("the cat sat", {"reference": "the cat ran"}), ("a", {"reference": "b"})],
    )
    assert [r.passed for r in response.results] == [True, False]


def test_multi_combines_sub_graders(stub) -> None:
    spec = {
        "type": "multi",
        "name": "combined",
        "graders": {
            "exact": string_check("eq"),
            "sim": {**similarity("rouge_1"), "reference": "{{item.answer}}"},
        },
        "calculate_output": "0.5 * exact + 0.5 * sim^2 + min(exact, sim) - max(0, floor(sim))",
    }
    response = grade(stub, spec, [("the cat sat", {"answer": "the cat ran"}), ("ok", {"answer": "ok"})])
    first, second = response.results
    assert dict(first.sub_scores) == pytest.approx({"exact": 0.0, "sim": 2 / 3})
    assert first.score == pytest.approx(0.5 * (2 / 3) ** 2)
    assert second.score == pytest.approx(0.5 + 0.5 + 1 - 1)
    assert (first.passed, second.passed) == (False, True)  # every sub-grader passed


def test_multi_errors_are_errors_not_zero(stub) -> None:
    spec = {
        "type": "multi",
        "name": "ratio",
        "graders": {"a": string_check("eq"), "b": string_check("ne")},
        "calculate_output": "a / b",
    }
    response = grade(stub, spec, [("x", {"answer": "x"}), ("x", {"answer": "y"}), ("x", {})])
    assert scores(response)[0] == "INVALID_SCORE"  # 1 / 0
    assert "division by zero" in response.results[0].error.message
    assert scores(response)[1] == 0.0  # 0 / 1
    assert scores(response)[2] == "TEMPLATE"
    assert response.results[2].error.message.startswith("graders.a: ")  # every failing part, by name
    assert "; graders.b: " in response.results[2].error.message


def test_math_equivalence(stub) -> None:
    spec = {
        "type": "math_equivalence",
        "name": "math",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
    }
    items = [
        ("1/2", {"answer": "0.5"}),
        ("\\frac{1}{2}", {"answer": "0.5"}),
        ("So the answer is $\\boxed{\\frac{1}{2}}$.", {"answer": "1/2"}),
        ("3", {"answer": "2"}),
        ("I don't know", {"answer": "2"}),
    ]
    assert scores(grade(stub, spec, items)) == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_ranked_list_metrics_and_score_choice(stub) -> None:
    spec = {"type": "ranked_list", "name": "genes", "input": "{{sample.output_text}}", "reference": "{{item.gene}}"}
    items = [
        ("1. BRCA1\n2. TP53\n3. EGFR", {"gene": "tp53"}),
        ('["EGFR", "TP53"]', {"gene": "EGFR"}),
        ("A, B, C, D, E, F, TP53", {"gene": "TP53"}),
        ("A, B", {"gene": ["x", "B"]}),
        ("A, B", {"gene": "Z"}),
    ]
    response = grade(stub, spec, items)
    assert scores(response) == [0.0, 1.0, 0.0, 0.0, 0.0]  # top@1 by default
    metrics = [dict(r.metrics) for r in response.results]
    assert metrics[0] == {"top@1": 0.0, "top@5": 1.0, "top@max": 1.0, "reciprocal_rank": 0.5, "list_length": 3.0}
    assert (metrics[2]["top@5"], metrics[2]["top@max"], metrics[2]["reciprocal_rank"]) == (
        0.0,
        1.0,
        pytest.approx(1 / 7),
    )
    assert metrics[3]["reciprocal_rank"] == 0.5
    assert metrics[4]["top@max"] == 0.0
    for metric, expected in [("top@5", [1.0, 1.0, 0.0, 1.0, 0.0]), ("reciprocal_rank", [0.5, 1.0, 1 / 7, 0.5, 0.0])]:
        assert scores(grade(stub, {**spec, "score_metric": metric}, items)) == pytest.approx(expected)


def test_json_check_schema_and_fields(stub) -> None:
    spec = {
        "type": "json_check",
        "name": "structured",
        "input": "{{sample.output_text}}",
        "schema": {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "object"}}},
        "fields": {"answer.value": "{{item.value}}", "answer.unit": "m"},
        "scoring": "fraction",
    }
    items = [
        ('{"answer": {"value": 4, "unit": "m"}}', {"value": 4}),  # all 3 checks
        ('{"answer": {"value": 5, "unit": "m"}}', {"value": 4}),  # schema + unit
        ('{"answer": 4}', {"value": 4}),  # nothing
        ("not json", {"value": 4}),
    ]
    response = grade(stub, spec, items)
    assert scores(response) == pytest.approx([1.0, 2 / 3, 0.0, 0.0])
    assert dict(response.results[1].metrics) == pytest.approx(
        {"valid_json": 1.0, "schema_valid": 1.0, "fields_matched": 0.5}
    )
    assert dict(response.results[3].metrics) == {"valid_json": 0.0}
    assert scores(grade(stub, {**spec, "scoring": "all"}, items)) == [1.0, 0.0, 0.0, 0.0]


def test_score_model_calls_the_endpoint_and_reads_the_score(stub, fake_model) -> None:
    spec = {
        "type": "score_model",
        "name": "judge",
        "model": "judge-model",
        "input": [
            {"role": "system", "content": "Score from 0 to 10."},
            {"role": "user", "content": "Answer: {{sample.output_text}} REPLY:{{item.reply}}"},
        ],
        "range": [0, 10],
        "pass_threshold": 7,
        "sampling_params": {"temperature": 0, "seed": 7, "max_completions_tokens": 50},
    }
    items = [
        ("a", {"reply": '{"result": 8, "steps": []}'}),
        ("b", {"reply": '```json\n{"score": 6.5}\n```'}),
        ("c", {"reply": "3"}),
        ("d", {"reply": "11"}),  # outside the range
        ("e", {"reply": "NaN"}),
        ("f", {"reply": "I refuse"}),
        ("g HTTP500", {"reply": "5"}),
    ]
    fake_model.requests.clear()
    response = grade(stub, spec, items)
    assert scores(response) == [8.0, 6.5, 3.0, "INVALID_SCORE", "INVALID_SCORE", "INVALID_SCORE", "MODEL_CALL"]
    assert [r.passed for r in response.results[:3]] == [True, False, False]
    assert "HTTP 500" in response.results[6].error.message
    first = next(r for r in fake_model.requests if "Answer: a " in r["body"]["messages"][-1]["content"])
    assert first["path"] == "/v1/chat/completions"
    assert first["auth"] == "Bearer model-secret"
    assert first["body"]["model"] == "judge-model"
    assert first["body"]["messages"][0] == {"role": "system", "content": "Score from 0 to 10."}
    assert (first["body"]["temperature"], first["body"]["seed"], first["body"]["max_completion_tokens"]) == (0, 7, 50)


def test_label_model_passing_labels(stub) -> None:
    spec = {
        "type": "label_model",
        "name": "sentiment",
        "model": "judge-model",
        "input": [{"role": "user", "content": "Label {{sample.output_text}} REPLY:{{item.reply}}"}],
        "labels": ["positive", "neutral", "negative"],
        "passing_labels": ["positive", "neutral"],
    }
    items = [
        ("a", {"reply": "positive"}),
        ("b", {"reply": '{"label": "negative"}'}),
        ("c", {"reply": "Neutral."}),
        ("d", {"reply": "great"}),
    ]
    response = grade(stub, spec, items)
    assert scores(response) == [1.0, 0.0, 1.0, "INVALID_SCORE"]
    assert [r.metrics["label_index"] for r in response.results[:3]] == [0.0, 2.0, 1.0]


@pytest.mark.python_grader
def test_python_grader_sees_sample_json_and_item_inside_multi(stub) -> None:
    require(stub, "python")
    source = (
        "def grade(sample, item):\n"
        "    same = sample['output_json']['answer'] == item['expected']['answer']\n"
        "    return 1.0 if same and isinstance(item['count'], int) else 0.25\n"
    )
    spec = {
        "type": "multi",
        "name": "m",
        "graders": {
            "py": {"type": "python", "name": "py", "source": source},
            "has_answer": string_check("like", '"answer"'),
        },
        "calculate_output": "py * has_answer",
    }
    items = [
        ('{"answer": 42}', {"expected": {"answer": 42}, "count": 3}),
        ('{"answer": 41}', {"expected": {"answer": 42}, "count": 3}),
    ]
    response = grade(stub, spec, items, tenant="python-tenant")
    assert scores(response) == [1.0, 0.25]
    assert dict(response.results[1].sub_scores) == {"py": 0.25, "has_answer": 1.0}
