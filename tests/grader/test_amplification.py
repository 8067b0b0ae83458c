"""Issue #13 item 5, amplification and event-loop blocking: a small request must not
become a huge response, a huge render or a quadratic parse. Each limit answers with a
clear error that names the field and the limit, and the service keeps grading
correctly afterwards.

No test here measures time. Quadratic work is ruled out by construction: the parsers are
checked against the regexes they replace on small inputs, then fed megabyte inputs that
the old regexes would need hours or more for (about 10^12 steps).
"""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any

import grpc
import pytest
from graderlib import FakeChatModel, Stub, grade, grade_request, register, require, scores, string_check, validate
from rft_grader import cpu_tasks
from rft_grader.domain import ErrorKind, Outcome, Sample
from rft_grader.graders.model_graders import parse_score
from rft_grader.limits import Limits, RenderBudget, clip, excerpt, fit_messages
from rft_grader.spec import parse_spec
from rft_grader.spec_cache import SpecCache
from rft_grader.templates import RenderTooLarge, Template, TemplateError, template_problems
from service_process import ServiceProcess

DEFAULTS = Limits()

# --- the regexes replaced by linear scanners, kept here as the reference behaviour ---------

_OLD_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_OLD_OBJECT = re.compile(r"\{.*\}", re.S)
_OLD_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)


def _old_parse_score(reply: str) -> float | None:
    text = reply.strip()
    candidates = [text, *_OLD_FENCE.findall(text)]
    if found := _OLD_OBJECT.search(text):
        candidates.append(found.group(0))
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            for key in ("result", "score"):
                number = value.get(key)
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    return float(number)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def _random_texts(alphabet: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(count)]


# --- unit: the reply parser -------------------------------------------------------------


def test_reply_parser_reads_replies_as_the_old_regexes_did() -> None:
    alphabet = ["`", "```", "json", " ", "\n", "{", "}", '"result"', ":", "1", "0.5", "x", '"score": 2']
    for text in _random_texts(alphabet, 20_000, seed=5):
        assert _same(parse_score(text), _old_parse_score(text)), repr(text)


@pytest.mark.parametrize(
    "reply",
    [
        "{" * 1_000_000,  # `\{.*\}`: every '{' scanned to the end for a '}'
        "```" + " " * 1_000_000 + "x",  # `\s*(.*?)```` with no closing fence: O(n^2) backtracking
        "```json\n" + "\t" * 1_000_000 + "0",
        "```" * 300_000 + "{",
    ],
)
def test_reply_parser_is_linear_on_hostile_megabyte_replies(reply: str) -> None:
    assert parse_score(reply) is None


def test_reply_parser_still_finds_scores_in_long_replies() -> None:
    assert parse_score("thinking " * 100_000 + '```json\n{"result": 3}\n```') == 3.0
    assert parse_score("{" * 100_000 + ' "score": 0.25}') is None  # not JSON, as before
    assert parse_score("x " * 100_000 + '{"score": 0.25} bye') == 0.25


# --- unit: templates ----------------------------------------------------------------------


def _old_template_problems(text: str) -> list[str]:
    problems = []
    for match in _OLD_PLACEHOLDER.finditer(text):
        ref = match.group(1).strip()
        parsed = re.match(r"^(item|sample)((?:\.[^.\s{}]+)+)$", ref)
        if parsed is None:
            problems.append(
                f"template {match.group(0)!r} must be {{{{item.<field>}}}} or {{{{sample.<field>}}}} "
                "(namespaces: item, sample; nested fields with dots)"
            )
            continue
        namespace, path = parsed.group(1), parsed.group(2)[1:].split(".")
        fields = ("output_text", "output_json", "output_tools", "output_messages")
        if namespace == "sample" and path[0] not in fields:
            problems.append(f"template {match.group(0)!r}: sample has only {', '.join(fields)}")
        elif namespace == "sample" and path[0] == "output_text" and len(path) > 1:
            problems.append(f"template {match.group(0)!r}: sample.output_text is a string and has no fields")
    if "{{" in _OLD_PLACEHOLDER.sub("", text):
        problems.append("template has '{{' without a closing '}}'")
    return problems


def _old_render(text: str, item: dict[str, Any]) -> str | None:
    """The old rendering for templates of top-level item fields; None when one is missing."""
    missing = []

    def one(match: re.Match) -> str:
        path = match.group(1).strip().split(".")[1:]
        if len(path) != 1 or path[0] not in item:
            missing.append(path)
            return ""
        return item[path[0]]

    rendered = _OLD_PLACEHOLDER.sub(one, text)
    return None if missing else rendered


def test_template_scanner_reads_templates_as_the_old_regex_did() -> None:
    alphabet = ["{", "}", "{{", "}}", "item.a", "item.b", " ", "x", "sample.output_text", "sample.answer", "."]
    item = {"a": "A", "b": "B"}
    for text in _random_texts(alphabet, 20_000, seed=7):
        assert template_problems(text) == _old_template_problems(text), repr(text)
        if not template_problems(text) and "sample" not in text:
            try:
                rendered = Template(text).render(Sample(""), item)
            except TemplateError:
                rendered = None
            assert rendered == _old_render(text, item), repr(text)


def test_template_scanner_is_linear_on_hostile_megabyte_templates() -> None:
    assert template_problems("{{" * 500_000) == ["template has '{{' without a closing '}}'"]
    assert template_problems("{{item.a}" * 100_000) == ["template has '{{' without a closing '}}'"]
    problems = template_problems("{{bad}}" * 100_000)  # one problem each, but a short list
    assert len(problems) == 11 and "99990 more" in problems[-1]


class CountingItem(dict):
    """An item that counts how often the renderer looks a field up."""

    lookups = 0

    def __contains__(self, key: object) -> bool:
        CountingItem.lookups += 1
        return super().__contains__(key)


def test_rendering_stops_as_soon_as_it_passes_its_limit() -> None:
    # The attack of the issue: 20k references to a 1 MB field would render 20 GB.
    template = Template("{{item.big}}" * 20_000)
    item = CountingItem(big="x" * 1_000_000)
    with pytest.raises(RenderTooLarge):
        template.render(Sample(""), item, limit=DEFAULTS.max_rendered_chars)
    assert CountingItem.lookups <= DEFAULTS.max_rendered_chars // 1_000_000 + 1


def test_render_budget_is_shared_by_the_whole_call() -> None:
    budget = RenderBudget(per_sample=10, per_call=25)
    grants = [budget.reserve() for _ in range(4)]
    assert grants == [10, 10, 5, 0]
    budget.release(grants[0], used=4)  # 6 unused characters come back
    assert budget.reserve() == 6


# --- unit: caches, clipping, the response budget -----------------------------------------


def test_parsed_spec_cache_is_bounded_by_bytes() -> None:
    cache = SpecCache(max_bytes=100_000, max_entries=1000)
    for i in range(50):
        raw = string_check(reference="x" * 10_000 + str(i))
        assert cache.parse(raw).reference.endswith(str(i))
    assert cache.bytes <= 100_000 and len(cache) <= 10
    huge = string_check(reference="y" * 200_000)
    assert cache.parse(huge).type == "string_check"  # parsed, but too large to keep
    assert cache.bytes <= 100_000


def test_worker_schema_cache_is_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_tasks, "_validators", type(cpu_tasks._validators)())
    monkeypatch.setattr(cpu_tasks, "_VALIDATOR_CACHE_BYTES", 50_000)
    for i in range(100):
        schema = {"type": "object", "description": "d" * 5_000, "required": [f"field_{i}"]}
        assert cpu_tasks.json_check(json.dumps({f"field_{i}": 1}), schema, [], "all")[0] == 1.0
    assert sum(map(len, cpu_tasks._validators)) <= 50_000 and len(cpu_tasks._validators) <= 10


def test_clip_and_excerpt_say_how_much_was_left_out() -> None:
    assert clip("short", 100) == "short"
    clipped = clip("a" * 10_000, 100)
    assert len(clipped) <= 100 and clipped.startswith("aaa") and clipped.endswith(" more characters)")
    shown = excerpt("\x01" * 5_000)
    assert shown.startswith("'\\x01") and shown.endswith("… (4800 more characters)") and len(shown) < 1_000


def test_fit_messages_keeps_short_messages_and_shares_the_rest() -> None:
    outcomes = [Outcome.failed(ErrorKind.EXCEPTION, "short")] + [
        Outcome.failed(ErrorKind.EXCEPTION, "é" * 5_000) for _ in range(99)
    ]
    fit_messages(outcomes, max_message_bytes=100_000)
    sizes = [len(o.error.message.encode()) for o in outcomes]
    assert outcomes[0].error.message == "short" and sum(sizes) <= 100_000
    assert all(o.error.message.endswith(" more characters)") for o in outcomes[1:])


def test_multi_sub_grader_count_and_names_are_limited() -> None:
    graders = {f"g{i}": string_check() for i in range(DEFAULTS.max_multi_graders + 1)}
    with pytest.raises(Exception, match=rf"graders: {len(graders)} sub-graders; at most 16 \(max_multi_graders\)"):
        parse_spec({"type": "multi", "name": "m", "graders": graders, "calculate_output": "g0"})
    with pytest.raises(Exception, match="longer than 64 characters"):
        parse_spec({"type": "multi", "name": "m", "graders": {"n" * 65: string_check()}, "calculate_output": "1"})


# --- live: the shared grader (default limits, --max-batch-items 300) --------------------------


def _assert_short_errors(response, kind: str, count: int) -> None:
    assert scores(response) == [kind] * count
    for result in response.results:
        assert len(result.error.message) <= DEFAULTS.max_error_message_chars


def test_an_error_echoing_a_huge_field_name_stays_small(stub) -> None:
    # 16k control characters as a field name: every sample's TEMPLATE error repeated it,
    # repr'd (4 characters each): 80 kB a result, 24 MB for 300 items (328 MB at 4096).
    spec = string_check(reference="{{item." + "\x01" * 16_000 + "}}")
    response = grade(stub, spec, [("x", {})] * 300)
    _assert_short_errors(response, "TEMPLATE", 300)
    assert "more characters)" in response.results[0].error.message
    assert response.ByteSize() < 300 * 2_100
    assert scores(grade(stub, string_check(), [("4", {"answer": "4"})])) == [1.0]


def test_a_label_model_error_does_not_repeat_every_label(stub) -> None:
    labels = ["\x01" * 2_000 + str(i) for i in range(8)]
    spec = {
        "type": "label_model",
        "name": "l",
        "model": "m",
        "input": [{"role": "user", "content": "REPLY:none of them"}],
        "labels": labels,
        "passing_labels": labels[:1],
    }
    response = grade(stub, spec, [("x", {})] * 300)
    _assert_short_errors(response, "INVALID_SCORE", 300)
    assert response.ByteSize() < 300 * 2_000
    # validation of passing_labels names the bad label briefly, not the whole list per label
    issues = validate(stub, {**spec, "passing_labels": ["\x02" * 1_000] * 100}).issues
    assert len(issues) == 100 and all(len(issue.message) < 1_000 for issue in issues)


@pytest.mark.python_grader
def test_python_grader_output_in_errors_is_cut(stub) -> None:
    require(stub, "python")
    source = "def grade(sample, item):\n    print('\\x00' * 65536)\n    raise ValueError('\\x01' * 10000)\n"
    response = grade(stub, {"type": "python", "name": "p", "source": source}, [("x", {})] * 300)
    _assert_short_errors(response, "EXCEPTION", 300)
    assert "ValueError" in response.results[0].error.message
    assert response.ByteSize() < 300 * 2_100


@pytest.mark.parametrize("references", [5, 20_000])
def test_rendering_past_max_rendered_chars_is_invalid_input_naming_the_field(stub, references: int) -> None:
    spec = string_check(reference="x")
    spec["input"] = "{{item.big}}" * references
    response = grade(stub, spec, [("x", {"big": "y" * 1_000_000}), ("x", {"big": "x"})])
    assert scores(response) == ["INVALID_INPUT", 0.0]
    message = response.results[0].error.message
    assert "input" in message and f"{DEFAULTS.max_rendered_chars}" in message and "max_rendered_chars" in message
    assert scores(grade(stub, string_check(), [("4", {"answer": "4"})])) == [1.0]


def test_oversized_spec_is_invalid_argument_naming_the_limit(stub) -> None:
    spec = string_check(reference="x" * (DEFAULTS.max_spec_bytes + 1))
    with pytest.raises(grpc.RpcError) as error:
        grade(stub, spec, [("x", {})])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {DEFAULTS.max_spec_bytes} (max_spec_bytes)" in error.value.details()
    response = validate(stub, spec)
    assert not response.valid and "max_spec_bytes" in response.issues[0].message
    with pytest.raises(grpc.RpcError) as error:
        register(stub, "too-big", spec)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert scores(grade(stub, string_check(), [("4", {"answer": "4"})])) == [1.0]


def test_multi_with_too_many_sub_graders_is_invalid_argument(stub) -> None:
    many = {f"g{i}": string_check() for i in range(17)}
    spec = {"type": "multi", "name": "m", "graders": many, "calculate_output": "g0"}
    with pytest.raises(grpc.RpcError) as error:
        grade(stub, spec, [("4", {"answer": "4"})])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "graders: 17 sub-graders; at most 16 (max_multi_graders)" in error.value.details()
    spec["graders"] = dict(list(many.items())[:16])
    spec["calculate_output"] = "+".join(spec["graders"]) + " - 15"
    assert scores(grade(stub, spec, [("4", {"answer": "4"})] * 300)) == [1.0] * 300


def test_a_spec_with_thousands_of_problems_is_reported_briefly(stub) -> None:
    spec = {**string_check(), **{f"unknown_{i}": i for i in range(5_000)}}
    with pytest.raises(grpc.RpcError) as error:
        grade(stub, spec, [("x", {})])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown field" in error.value.details() and len(error.value.details()) <= 2_000
    issues = validate(stub, spec).issues
    assert len(issues) == 101 and "4900 more issues" in issues[-1].message


def test_a_hostile_model_reply_is_read_in_linear_time(stub) -> None:
    spec = {
        "type": "score_model",
        "name": "judge",
        "model": "m",
        "input": [{"role": "user", "content": "REPLY:{{sample.output_text}}"}],
    }
    fence = "```" + " " * 99_000 + "x"  # ~70 s of regex backtracking on the event loop before
    items = [(fence, {}), ("{" * 99_000, {}), ("0.5", {})]
    assert scores(grade(stub, spec, items)) == ["INVALID_SCORE", "INVALID_SCORE", 0.5]


# --- live: a grader with small limits, so every limit is quick to reach ---------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, fake_model: FakeChatModel):
    args = [
        "--data-dir", str(tmp_path_factory.mktemp("grader-small")),
        "--model-base-url", fake_model.url,
        "--max-batch-items", "300",
        "--max-error-message-chars", "500",
        "--max-response-bytes", "65536",
        "--max-rendered-chars", "1000",
        "--max-call-rendered-chars", "10000",
        "--max-multi-graders", "4",
        "--model-max-reply-bytes", "2048",
    ]  # fmt: skip
    with ServiceProcess("rft-grader", args) as proc, proc.channel() as channel:
        yield Stub(channel)


def test_error_messages_are_cut_to_keep_the_response_under_max_response_bytes(small) -> None:
    # Four sub-graders fail on every sample; multi joins their ~450-character messages.
    missing = string_check(reference="{{item." + "k" * 2_000 + "}}")
    spec = {"type": "multi", "name": "m", "graders": dict.fromkeys("abcd", missing), "calculate_output": "a"}
    few = grade(small, spec, [("x", {})] * 10)
    assert all(450 <= len(r.error.message) <= 500 for r in few.results)  # max_error_message_chars
    response = grade(small, spec, [("x", {})] * 300)  # 300 x 500 characters would be 150 kB
    assert scores(response) == ["TEMPLATE"] * 300
    assert response.ByteSize() <= 65536
    for result in response.results:
        assert result.error.message.startswith("graders.a: {{item.kkk") and "more characters)" in result.error.message


def test_results_too_large_to_send_are_invalid_argument(small) -> None:
    ranked = {"type": "ranked_list", "name": "r", "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}
    graders = {f"ranking_{i}_" + "n" * 50: ranked for i in range(4)}
    spec = {"type": "multi", "name": "m", "graders": graders, "calculate_output": "1"}
    with pytest.raises(grpc.RpcError) as error:  # 20 metrics with long names a result
        grade(small, spec, [("a", {"answer": "a"})] * 300)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.value.details()
    assert "items" in details and "at most 65536 (max_response_bytes)" in details
    fits = int(re.search(r"send at most (\d+) items", details).group(1))
    assert 10 <= fits < 300
    assert grade(small, spec, [("a", {"answer": "a"})] * fits).ByteSize() <= 65536


def test_templates_render_within_the_sample_and_call_budgets(small) -> None:
    spec = string_check(reference="x")
    too_long = grade(small, spec, [("y" * 1_001, {}), ("x", {})])
    assert scores(too_long) == ["INVALID_INPUT", 1.0]
    message = too_long.results[0].error.message
    assert message.startswith("input:") and "1000 characters (max_rendered_chars)" in message
    # 600 characters each: 16 samples fit the call's 10000, the rest are refused, by name
    response = grade(small, spec, [("y" * 600, {})] * 30)
    assert scores(response) == [0.0] * 16 + ["INVALID_INPUT"] * 14
    assert "max_call_rendered_chars" in response.results[-1].error.message
    assert scores(grade(small, spec, [("x", {})] * 30)) == [1.0] * 30  # a new call, a new budget


def test_a_model_reply_past_model_max_reply_bytes_is_a_model_call_error(small) -> None:
    spec = {
        "type": "score_model",
        "name": "j",
        "model": "m",
        "input": [{"role": "user", "content": "REPLY:{{sample.output_text}}"}],
    }
    # 400 control characters: a 406-character prompt, but 2400 bytes of JSON in the reply
    response = grade(small, spec, [("\x01" * 400, {}), ("0.25", {})])
    assert scores(response) == ["MODEL_CALL", 0.25]
    assert "2048 bytes (model_max_reply_bytes)" in response.results[0].error.message


def test_the_small_request_limits_still_allow_ordinary_work(small) -> None:
    request = grade_request(string_check(), [("4", {"answer": "4"})] * 300)
    assert scores(small.Grade(request, timeout=60)) == [1.0] * 300
