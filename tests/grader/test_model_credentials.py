"""The operator's model API key goes only to the configured model endpoint: a spec that
names its own base_url (allowed with --allow-spec-base-url) is called without it."""

from __future__ import annotations

from graderlib import FakeChatModel, Stub, grade, scores
from service_process import ServiceProcess


def judge(base_url: str | None = None) -> dict:
    spec = {
        "type": "score_model",
        "name": "judge",
        "model": "judge-model",
        "input": [{"role": "user", "content": "Answer: {{sample.output_text}} REPLY:7"}],
        "range": [0, 10],
    }
    return {**spec, "base_url": base_url} if base_url else spec


def test_a_spec_endpoint_never_receives_the_operators_key(tmp_path) -> None:
    with FakeChatModel() as configured, FakeChatModel() as chosen_by_spec:
        args = ["--data-dir", str(tmp_path), "--model-base-url", configured.url]
        args += ["--model-api-key", "operator-model-key", "--allow-spec-base-url"]
        with ServiceProcess("rft-grader", args) as grader, grader.channel() as channel:
            stub = Stub(channel)
            assert scores(grade(stub, judge(), [("a", {})])) == [7.0]
            assert scores(grade(stub, judge(chosen_by_spec.url), [("a", {})])) == [7.0]
    assert [r["auth"] for r in configured.requests] == ["Bearer operator-model-key"]
    assert [r["auth"] for r in chosen_by_spec.requests] == [None]
