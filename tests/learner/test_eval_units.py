"""Evaluation runs without services: the metrics against numbers worked by hand, the row
engine with a scripted sampler and grader, the store's tenancy and cursors, and the
runner's cancel and restart rules."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from rft_learner.db import Database, UnknownCursor
from rft_learner.eval_store import CANCELED, COMPLETED, FAILED, IN_PROGRESS, INTERRUPTED, EvalStore, NotFound
from rft_learner.evaluations import (
    Answers,
    EvalRunner,
    Graded,
    RunFailure,
    RunPlan,
    SamplingError,
    SamplingSettings,
    eval_metrics,
    evaluate_rows,
    output_item,
    result_counts,
)


def ok(score: float, passed: bool, **metrics: float) -> Graded:
    return Graded(score=score, passed=passed, metrics=metrics)


ERROR = Graded(error={"code": "exception", "message": "boom"})


def test_metrics_by_hand() -> None:
    # Row 0: 2 of 4 samples pass; row 1: 0 of 4 (one errored); row 2: 4 of 4.
    sampled = [
        [ok(1, True), ok(0, False), ok(1, True), ok(0, False)],
        [ok(0, False), ERROR, ok(0.5, False), ok(0, False)],
        [ok(1, True)] * 4,
    ]
    greedy = [ok(1, True, **{"top@1": 1.0, "top@5": 1.0}), ERROR, ok(0, False, **{"top@1": 0.0, "top@5": 0.5})]
    m = eval_metrics(sampled, greedy, 4)
    assert m["reward_mean"] == pytest.approx((2 + 0.5 + 4) / 11)  # the errored sample is left out
    assert m["greedy_reward_mean"] == pytest.approx(0.5)
    # pass@1 = mean(c / n) = (2/4 + 0 + 1) / 3; pass@4 = mean(1 if c > 0) = 2/3.
    assert m["pass@1"] == pytest.approx(0.5)
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert m["greedy_pass@1"] == pytest.approx(0.5)
    assert m["grader_errors"] == 2
    assert m["top@1"] == pytest.approx(0.5) and m["top@5"] == pytest.approx(0.75)
    # pass@2 from 4 samples with 2 correct: 1 - C(2,2)/C(4,2) = 5/6 (Chen et al.'s estimator).
    assert eval_metrics([[ok(1, True), ok(1, True), ok(0, False), ok(0, False)]], [ok(1, True)], 4)["pass@4"] == 1.0
    assert result_counts(greedy) == {"total": 3, "passed": 1, "failed": 1, "errored": 1}


def test_metrics_of_nothing_are_null_not_nan() -> None:
    m = eval_metrics([[ERROR]], [ERROR], 1)
    assert m["reward_mean"] is None and m["greedy_reward_mean"] is None and m["greedy_pass@1"] is None
    assert m["pass@1"] == 0.0  # an errored sample does not pass
    json.dumps(m, allow_nan=False)
    assert eval_metrics([], [], 2)["pass@1"] is None


def test_sub_scores_are_averaged_over_greedy_answers() -> None:
    greedy = [Graded(1.0, True, {"a": 1.0, "b": 0.0}), Graded(0.5, False, {"a": 0.0})]
    m = eval_metrics([[g] for g in greedy], greedy, 1)
    assert m["sub_score.a"] == 0.5 and m["sub_score.b"] == 0.0


def run(coro):
    return asyncio.run(coro)


def test_rows_are_answered_graded_and_seeded_per_row() -> None:
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}], "answer": str(i % 2)} for i in range(40)]
    calls = []

    async def sample(messages, n, temperature, seed):
        calls.append((messages[0]["content"], n, temperature, seed))
        if messages[0]["content"] == "q3":
            raise SamplingError("prompt too long")
        index = int(messages[0]["content"][1:])
        return Answers([str((index + j) % 2) for j in range(n)], ["stop"] * n, prompt_tokens=3, completion_tokens=n)

    async def grade(pairs):
        return [Graded(1.0 if text == item["answer"] else 0.0, text == item["answer"]) for text, item in pairs]

    chunks = []

    async def on_chunk(results):
        chunks.append(results)

    settings = SamplingSettings(n=3, temperature=0.7, top_p=1.0, max_completion_tokens=8, seed=100)
    run(evaluate_rows(rows, sample, grade, settings, on_chunk))
    results = [r for chunk in chunks for r in chunk]
    assert [len(c) for c in chunks] == [32, 8] and [r.index for r in results] == list(range(40))
    assert ("q5", 3, 0.7, 100 + 5 * 3) in calls and ("q5", 1, 0.0, 100) in calls
    assert results[3].greedy.error["code"] == "sampling_error" and all(s.error for s in results[3].samples)
    assert results[4].greedy.passed and [s.passed for s in results[4].samples] == [True, False, True]
    item = output_item(results[4], 3, {"name": "eq", "type": "string_check"}, "tiny", settings)
    assert item["passed_samples"] == 2 and item["pass@1"] == pytest.approx(2 / 3) and item["pass@3"] == 1.0
    assert item["sample"]["output"] == [{"role": "assistant", "content": "0"}]
    assert item["results"][0]["passed"] and [s["output_text"] for s in item["samples"]] == ["0", "1", "0"]
    assert item["datasource_item"] == rows[4]
    json.dumps(item, allow_nan=False)


@pytest.fixture
def store(tmp_path):
    db = Database(tmp_path / "learner.db")
    yield EvalStore(db)
    db.close()


def test_store_scopes_every_row_to_its_owner(store) -> None:
    ids = [store.create_eval("alice", {"name": f"e{i}"}).id for i in range(5)]
    other = store.create_eval("bob", {"name": "b"})
    assert [e.id for e in store.list_evals("alice", 10)] == ids
    assert [e.id for e in store.list_evals("alice", 10, order="desc")] == ids[::-1]
    assert [e.id for e in store.list_evals("alice", 2, after=ids[1])] == ids[2:4]
    with pytest.raises(UnknownCursor):
        store.list_evals("alice", 2, after=other.id)  # bob's id is no cursor of alice's
    with pytest.raises(NotFound):
        store.get_eval(other.id, "alice")
    with pytest.raises(NotFound):
        store.delete_eval(other.id, "alice")
    with pytest.raises(NotFound):
        store.create_run(other.id, "alice", {}, {})
    run_ = store.create_run(ids[0], "alice", {"name": "r"}, {})
    with pytest.raises(NotFound):
        store.get_run(ids[0], run_.id, "bob")
    store.add_output_items(run_.id, [(i, "pass", {"i": i}) for i in range(3)])
    assert [i.body["i"] for i in store.list_output_items(run_.id, 10, after_index=0)] == [1, 2]
    assert [i.index for i in store.list_output_items(run_.id, 10, order="desc")] == [2, 1, 0]
    saved = store.save_grader("alice", "g", {"type": "string_check"})
    assert store.list_graders("bob", 10) == [] and store.get_grader(saved.id, "alice").spec["type"] == "string_check"
    with pytest.raises(NotFound):
        store.get_grader(saved.id, "bob")
    store.delete_eval(ids[0], "alice")  # its runs and items go with it
    with pytest.raises(NotFound):
        store.get_run(ids[0], run_.id, "alice")
    assert store.list_output_items(run_.id, 10) == []


def plan(run_id: str, path, sample, grade, n: int = 2) -> RunPlan:
    @contextlib.asynccontextmanager
    async def open_sampler():
        yield sample

    return RunPlan(
        run_id=run_id,
        file_path=str(path),
        total_rows=3,
        settings=SamplingSettings(n, 1.0, 1.0, 8, 0),
        criterion={"name": "eq", "type": "string_check"},
        model="tiny",
        open_sampler=open_sampler,
        grade=grade,
    )


def test_runner_completes_cancels_fails_and_marks_interrupted_runs(store, tmp_path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": "x"}], "a": "1"}) + "\n" for _ in range(3))
    )
    evaluation = store.create_eval("alice", {"name": "e"})

    async def sample(messages, n, temperature, seed):
        return Answers(["1"] * n, ["stop"] * n, 2, n)

    async def grade(pairs):
        return [Graded(1.0, True) for _ in pairs]

    async def slow_sample(messages, n, temperature, seed):
        await asyncio.sleep(3600)

    async def bad_grade(pairs):
        raise RunFailure("invalid_grader", "grader: no such field")

    async def scenario():
        runner = EvalRunner(store)
        done = store.create_run(evaluation.id, "alice", {}, {})
        runner.submit(plan(done.id, data, sample, grade))
        slow = store.create_run(evaluation.id, "alice", {}, {})
        runner.submit(plan(slow.id, data, slow_sample, grade))
        failing = store.create_run(evaluation.id, "alice", {}, {})
        runner.submit(plan(failing.id, data, sample, bad_grade))
        while store.get_run(evaluation.id, slow.id, "alice").status != IN_PROGRESS:
            await asyncio.sleep(0.01)
        await runner.cancel(slow.id)
        while store.get_run(evaluation.id, failing.id, "alice").status != FAILED:
            await asyncio.sleep(0.01)
        return done, slow, failing

    done, slow, failing = run(scenario())
    finished = store.get_run(evaluation.id, done.id, "alice")
    assert finished.status == COMPLETED and finished.results["result_counts"]["passed"] == 3
    assert (
        finished.results["metrics"]["pass@2"] == 1.0 and finished.results["per_model_usage"][0]["invocation_count"] == 6
    )
    assert store.get_run(evaluation.id, slow.id, "alice").status == CANCELED
    failed = store.get_run(evaluation.id, failing.id, "alice")
    assert (failed.error_code, failed.error_message) == ("invalid_grader", "grader: no such field")

    stuck = store.create_run(evaluation.id, "alice", {}, {})
    store.set_run_status(stuck.id, IN_PROGRESS)
    EvalRunner(store)  # a new learner process
    restarted = store.get_run(evaluation.id, stuck.id, "alice")
    assert restarted.status == FAILED and restarted.error_code == INTERRUPTED and restarted.finished_at


def test_a_failing_row_stops_the_others_requests() -> None:
    rows = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(8)]
    active = {"now": 0, "canceled": 0}

    async def sample(messages, n, temperature, seed):
        if messages[0]["content"] == "5":
            await asyncio.sleep(0.05)
            raise RunFailure("model_unavailable", "the server went away")
        active["now"] += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            active["canceled"] += 1
            raise
        finally:
            active["now"] -= 1

    async def grade(pairs):
        raise AssertionError("nothing is graded")

    async def scenario():
        settings = SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_completion_tokens=8, seed=0)
        with pytest.raises(RunFailure):
            await asyncio.wait_for(evaluate_rows(rows, sample, grade, settings, None), timeout=10)
        # Checked before asyncio.run's clean-up would cancel anything left over.
        assert active["now"] == 0 and active["canceled"] == 14  # the other 7 rows x (greedy + samples)

    run(scenario())
