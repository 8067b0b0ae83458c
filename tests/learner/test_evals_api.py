"""Evaluations and saved graders over the HTTP API, driven by the official `openai` package
against a live learner (its inference pool starts real vLLM servers) and a live grader:
what the console's Evaluate and Graders pages do."""

from __future__ import annotations

import time

import openai
import pytest
from jobs_client import learner_args, write_jsonl
from service_process import ServiceProcess
from tenant_keys import KEYS, write_keys_file

LETTERS = "etaoinsh"
GRADER = {
    "type": "string_check",
    "name": "has_letter",
    "input": "{{sample.output_text}}",
    "reference": "{{item.letter}}",
    "operation": "like",
}
ROWS = [{"messages": [{"role": "user", "content": f"Say something #{i}"}], "letter": LETTERS[i]} for i in range(8)]
FINAL = {"completed", "failed", "canceled"}


@pytest.fixture(scope="module")
def learner(grader_service, tiny_model, tmp_path_factory):
    """No rollout service: evaluations sample through the API's own inference servers.
    Two catalogue names for one directory: two models whose greedy answers must agree."""
    workdir = tmp_path_factory.mktemp("evals-api")
    args = learner_args(workdir / "learner", None, grader_service)
    args += ["--api-keys-file", str(write_keys_file(workdir / "api-keys"))]
    args += ["--model-catalogue", f"tiny={tiny_model},twin={tiny_model}"]
    with ServiceProcess("rft-learner", args) as proc:
        yield proc


def client(learner, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=learner.base_url, api_key=KEYS[tenant], max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def alice(learner) -> openai.OpenAI:
    return client(learner, "alice")


@pytest.fixture(scope="module")
def bob(learner) -> openai.OpenAI:
    return client(learner, "bob")


@pytest.fixture(scope="module")
def rows_file(alice, tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("eval-files") / "valid.jsonl", ROWS)
    with open(path, "rb") as handle:
        return alice.files.create(file=handle, purpose="fine-tune")


@pytest.fixture(scope="module")
def evaluation(alice):
    return alice.evals.create(
        name="letters",
        data_source_config={
            "type": "custom",
            "item_schema": {"type": "object", "properties": {"letter": {"type": "string"}}},
            "include_sample_schema": True,
        },
        testing_criteria=[GRADER],
        metadata={"team": "a"},
    )


def completions(file_id: str, model: str, **sampling) -> dict:
    return {
        "type": "completions",
        "source": {"type": "file_id", "id": file_id},
        "model": model,
        "sampling_params": {"temperature": 1.0, "max_completion_tokens": 6, "seed": 3, **sampling},
    }


def wait_for(alice: openai.OpenAI, eval_id: str, run_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = alice.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in FINAL:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout} s")


def test_evals_are_created_listed_and_refused_with_the_field_named(alice, bob, evaluation) -> None:
    assert evaluation.object == "eval" and evaluation.name == "letters" and evaluation.metadata == {"team": "a"}
    schema = evaluation.data_source_config.schema_
    assert schema["properties"]["item"]["properties"]["letter"] == {"type": "string"}
    assert "sample" in schema["properties"]
    assert evaluation.testing_criteria[0].type == "string_check"
    assert alice.evals.retrieve(evaluation.id).id == evaluation.id
    assert evaluation.id in [e.id for e in alice.evals.list()]
    assert alice.evals.update(evaluation.id, name="letters v2").name == "letters v2"
    # A null name leaves it as it is (it was stored as null, and every read then failed 500).
    unchanged = alice.post(f"/evals/{evaluation.id}", body={"name": None, "metadata": {"team": "a"}}, cast_to=object)
    assert unchanged["name"] == "letters v2"
    assert alice.evals.retrieve(evaluation.id).name == "letters v2"
    assert [e.name for e in alice.evals.list()] == ["letters v2"]

    bad = {**GRADER, "operation": "sounds_like"}
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.create(data_source_config={"type": "custom", "item_schema": {}}, testing_criteria=[bad])
    assert refused.value.body["param"].startswith("testing_criteria[0]"), refused.value.body
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.create(data_source_config={"type": "custom", "item_schema": {}}, testing_criteria=[GRADER] * 2)
    assert refused.value.body["param"] == "testing_criteria"
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.create(data_source_config={"type": "logs"}, testing_criteria=[GRADER])
    assert refused.value.body["param"].startswith("data_source_config"), refused.value.body

    assert list(bob.evals.list()) == []
    with pytest.raises(openai.NotFoundError):
        bob.evals.retrieve(evaluation.id)
    with pytest.raises(openai.NotFoundError):
        bob.evals.delete(evaluation.id)
    with pytest.raises(openai.NotFoundError) as missing:
        bob.evals.update(evaluation.id, name="mine")
    assert evaluation.id in missing.value.message and "alice" not in missing.value.message


def test_bad_runs_name_the_field(alice, bob, evaluation, rows_file) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.runs.create(evaluation.id, data_source=completions("file-nope", "tiny"))
    assert refused.value.body["param"] == "data_source.source.id"
    with pytest.raises(openai.NotFoundError) as missing:
        alice.evals.runs.create(evaluation.id, data_source=completions(rows_file.id, "gpt-7"))
    assert missing.value.body["param"] == "data_source.model"
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.runs.create(evaluation.id, data_source=completions(rows_file.id, "tiny", n=0))
    assert refused.value.body["param"] == "data_source.sampling_params.n"
    with pytest.raises(openai.NotFoundError):
        bob.evals.runs.create(evaluation.id, data_source=completions(rows_file.id, "tiny"))
    with pytest.raises(openai.BadRequestError) as refused:  # alice's file is not bob's
        bob_eval = bob.evals.create(data_source_config={"type": "custom", "item_schema": {}}, testing_criteria=[GRADER])
        bob.evals.runs.create(bob_eval.id, data_source=completions(rows_file.id, "tiny"))
    assert refused.value.body["param"] == "data_source.source.id"
    bob.evals.delete(bob_eval.id)


def items_of(alice, eval_id: str, run_id: str) -> list:
    first = alice.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=3)
    assert len(first.data) == 3 and first.has_more
    return list(alice.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=3))  # every page


def check_run(run, items, k: int) -> None:
    counts = run.result_counts
    assert run.status == "completed", run.error
    assert counts.total == len(ROWS) == counts.passed + counts.failed + counts.errored
    assert run.per_testing_criteria_results[0].testing_criteria == "has_letter"
    assert run.per_testing_criteria_results[0].passed == counts.passed
    metrics = run.metrics
    for name in ("reward_mean", "greedy_reward_mean", "pass@1", f"pass@{k}", "greedy_pass@1"):
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics)
    assert metrics["grader_errors"] == 0 and run.progress == {"items_done": len(ROWS), "items_total": len(ROWS)}
    assert [i.datasource_item_id for i in items] == list(range(len(ROWS)))
    assert all(len(i.samples) == k for i in items)
    # The run's metrics are the output items' numbers, summarised.
    assert metrics["pass@1"] == pytest.approx(sum(i.passed_samples / k for i in items) / len(items))
    assert metrics[f"pass@{k}"] == pytest.approx(sum(i.passed_samples > 0 for i in items) / len(items))
    scores = [s["score"] for i in items for s in i.samples]
    assert metrics["reward_mean"] == pytest.approx(sum(scores) / len(scores))
    assert metrics["greedy_pass@1"] == pytest.approx(sum(i.status == "pass" for i in items) / len(items))
    assert counts.passed == sum(i.status == "pass" for i in items)
    for item in items:
        assert item.results[0].passed == (item.status == "pass") == item.greedy["passed"]
        assert item.sample.output[0].content == item.greedy["output_text"]
        assert item.passed_samples == sum(s["passed"] for s in item.samples)
        for answer in (item.greedy, *item.samples):  # the grader's verdict, checked here
            assert answer["passed"] == (item.datasource_item["letter"] in answer["output_text"])


def test_runs_on_two_models_complete_with_consistent_metrics(alice, bob, evaluation, rows_file) -> None:
    first = alice.evals.runs.create(
        evaluation.id, name="base", data_source=completions(rows_file.id, "tiny", n=3), metadata={"k": "3"}
    )
    assert first.object == "eval.run" and first.status in ("queued", "in_progress") and first.model == "tiny"
    assert first.data_source.sampling_params.n == 3
    run = wait_for(alice, evaluation.id, first.id)
    items = items_of(alice, evaluation.id, run.id)
    check_run(run, items, 3)
    assert run.per_model_usage[0].invocation_count == 2 * len(ROWS)  # greedy + K samples per row

    # The greedy answer is what chat completions answer at temperature 0.
    reply = alice.chat.completions.create(
        model="tiny", messages=ROWS[0]["messages"], max_tokens=6, temperature=0, seed=3
    )
    assert reply.choices[0].message.content == items[0].greedy["output_text"]

    second = alice.evals.runs.create(evaluation.id, name="twin", data_source=completions(rows_file.id, "twin", n=2))
    twin = wait_for(alice, evaluation.id, second.id)
    twin_items = items_of(alice, evaluation.id, twin.id)
    check_run(twin, twin_items, 2)
    # Same weights under another name: the same greedy answers, row by row (side by side).
    assert [i.greedy["output_text"] for i in twin_items] == [i.greedy["output_text"] for i in items]
    assert twin.metrics["greedy_pass@1"] == run.metrics["greedy_pass@1"]

    listed = [r.id for r in alice.evals.runs.list(evaluation.id)]
    assert listed == [first.id, second.id]
    assert [r.id for r in alice.evals.runs.list(evaluation.id, order="desc", status="completed")] == listed[::-1]
    passing = list(alice.evals.runs.output_items.list(run.id, eval_id=evaluation.id, status="pass"))
    assert len(passing) == run.result_counts.passed
    one = alice.evals.runs.output_items.retrieve(items[1].id, eval_id=evaluation.id, run_id=run.id)
    assert one.datasource_item == ROWS[1]
    # Crafted ids ("²".isdigit() is True, int("²") raises) are a 404 and a 400, not a 500.
    crafted = items[1].id[:-1] + "\u00b2"
    with pytest.raises(openai.NotFoundError):
        alice.evals.runs.output_items.retrieve(crafted, eval_id=evaluation.id, run_id=run.id)
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.runs.output_items.list(run.id, eval_id=evaluation.id, after=crafted)
    assert refused.value.body["param"] == "after"
    # A page holds at most 100 items (each may carry 65 answers of up to 32k tokens).
    assert len(alice.evals.runs.output_items.list(run.id, eval_id=evaluation.id, limit=100).data) == len(ROWS)
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.runs.output_items.list(run.id, eval_id=evaluation.id, limit=101)
    assert refused.value.body["param"] == "limit"

    with pytest.raises(openai.NotFoundError):
        bob.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    with pytest.raises(openai.NotFoundError):
        list(bob.evals.runs.output_items.list(run.id, eval_id=evaluation.id))
    with pytest.raises(openai.NotFoundError):
        bob.evals.runs.cancel(run.id, eval_id=evaluation.id)
    with pytest.raises(openai.ConflictError):
        alice.evals.runs.cancel(run.id, eval_id=evaluation.id)


def test_a_tenant_may_queue_four_runs_and_no_run_over_the_token_budget(alice, evaluation, rows_file, tmp_path) -> None:
    big = completions(rows_file.id, "tiny", n=32, max_completion_tokens=64)
    runs = [alice.evals.runs.create(evaluation.id, data_source=big) for _ in range(4)]
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            alice.evals.runs.create(evaluation.id, data_source=big)
        assert refused.value.body["code"] == "rate_limited" and "at most 4" in refused.value.message
    finally:
        for started in runs:
            assert alice.evals.runs.cancel(started.id, eval_id=evaluation.id).status == "canceled"
    alice.evals.runs.cancel(
        alice.evals.runs.create(evaluation.id, data_source=big).id, eval_id=evaluation.id
    )  # canceled runs no longer count

    path = write_jsonl(tmp_path / "ten.jsonl", [{**ROWS[0], "letter": "e"}] * 10)
    with open(path, "rb") as handle:
        ten = alice.files.create(file=handle, purpose="fine-tune")
    huge = completions(ten.id, "tiny", n=64, max_completion_tokens=32768)  # 10 x 65 x 32768 > 20M
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.runs.create(evaluation.id, data_source=huge)
    assert refused.value.body["param"] == "data_source.sampling_params.max_completion_tokens"
    assert "n 64" in refused.value.message and "20,000,000" in refused.value.message


def test_cancel_and_delete(alice, evaluation, rows_file) -> None:
    started = alice.evals.runs.create(
        evaluation.id, data_source=completions(rows_file.id, "tiny", n=32, max_completion_tokens=64)
    )
    canceled = alice.evals.runs.cancel(started.id, eval_id=evaluation.id)
    assert canceled.status == "canceled"
    time.sleep(1)
    assert alice.evals.runs.retrieve(started.id, eval_id=evaluation.id).status == "canceled"
    deleted = alice.evals.runs.delete(started.id, eval_id=evaluation.id)
    assert deleted.deleted and deleted.run_id == started.id
    with pytest.raises(openai.NotFoundError):
        alice.evals.runs.retrieve(started.id, eval_id=evaluation.id)
    runs = [r.id for r in alice.evals.runs.list(evaluation.id)]
    assert alice.evals.delete(evaluation.id).deleted
    with pytest.raises(openai.NotFoundError):
        alice.evals.runs.retrieve(runs[0], eval_id=evaluation.id)
    assert list(alice.evals.list()) == []


def test_saved_graders(alice, bob) -> None:
    saved = alice.post("/graders", body={"name": "letters", "grader": GRADER}, cast_to=object)
    assert saved["object"] == "grader" and saved["grader"] == GRADER and saved["id"].startswith("grader_")
    listed = alice.get("/graders", cast_to=object)
    assert [g["id"] for g in listed["data"]] == [saved["id"]] and listed["has_more"] is False
    assert alice.get(f"/graders/{saved['id']}", cast_to=object)["name"] == "letters"
    with pytest.raises(openai.BadRequestError) as refused:
        alice.post("/graders", body={"name": "bad", "grader": {**GRADER, "operation": "sounds_like"}}, cast_to=object)
    assert refused.value.body["param"].startswith("grader"), refused.value.body
    with pytest.raises(openai.BadRequestError) as refused:
        alice.post("/graders", body={"name": "url", "grader": {**GRADER, "base_url": "http://x"}}, cast_to=object)
    assert refused.value.body["param"] == "grader.base_url"

    assert bob.get("/graders", cast_to=object)["data"] == []
    with pytest.raises(openai.NotFoundError):
        bob.get(f"/graders/{saved['id']}", cast_to=object)
    with pytest.raises(openai.NotFoundError):
        bob.delete(f"/graders/{saved['id']}", cast_to=object)
    assert alice.delete(f"/graders/{saved['id']}", cast_to=object)["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        alice.get(f"/graders/{saved['id']}", cast_to=object)
