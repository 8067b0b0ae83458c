"""Evaluation runs without services: the metrics against numbers worked by hand, the row
engine with a scripted sampler and grader, the store's tenancy and cursors, and the
runner's cancel and restart rules."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import threading
import tracemalloc
import types

import pytest
from rft_learner.db import Database, UnknownCursor
from rft_learner.eval_store import (
    CANCELED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    INTERRUPTED,
    EvalStore,
    NotFound,
    TooManyRuns,
    output_item_id,
    output_item_index,
)
from rft_learner.evaluations import (
    MAX_ACTIVE_RUNS_PER_TENANT,
    MAX_RUN_COMPLETION_TOKENS,
    ROWS_PER_GRADE,
    Answers,
    EvalRunner,
    FairSlots,
    Graded,
    RunFailure,
    RunPlan,
    RunTotals,
    SamplingError,
    SamplingSettings,
    eval_metrics,
    evaluate_rows,
    output_item,
    result_counts,
    run_size_issue,
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


def plan(
    run_id: str, path, sample, grade, n: int = 2, rows: int = 3, owner: str = "alice", eval_id: str = ""
) -> RunPlan:
    @contextlib.asynccontextmanager
    async def open_sampler():
        yield sample

    return RunPlan(
        run_id=run_id,
        file_path=str(path),
        total_rows=rows,
        settings=SamplingSettings(n, 1.0, 1.0, 8, 0),
        criterion={"name": "eq", "type": "string_check"},
        model="tiny",
        open_sampler=open_sampler,
        grade=grade,
        owner=owner,
        eval_id=eval_id,
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


# -- the review's defects, each with the test that failed before its fix ---------------------------
def test_output_item_ids_take_ascii_digits_only() -> None:
    run_id = "evalrun_abc"
    assert output_item_index(run_id, output_item_id(run_id, 12)) == 12
    assert output_item_index(run_id, output_item_id(run_id, 0)) == 0
    # "²".isdigit() and "٣".isdigit() are True, but int("²") raises: the route answered 500.
    for crafted in ("²", "٣", "1²", "01", "+1", "-1", " 1", "1_0", "9" * 40, ""):
        assert output_item_index(run_id, "outputitem_abc_" + crafted) is None, crafted
    assert output_item_index(run_id, "outputitem_other_1") is None


def random_grades(seed: int, rows: int, k: int) -> tuple[list[list[Graded]], list[Graded]]:
    rng = random.Random(seed)

    def one() -> Graded:
        if rng.random() < 0.1:
            return ERROR
        metrics = {"top@1": rng.random()} if rng.random() < 0.5 else {}
        sub = {"a": rng.random(), **({"b": rng.random()} if rng.random() < 0.3 else {})}
        return Graded(rng.random(), rng.random() < 0.5, sub, metrics)

    return [[one() for _ in range(k)] for _ in range(rows)], [one() for _ in range(rows)]


def test_running_totals_give_what_the_metrics_over_every_row_give() -> None:
    for seed, rows, k in ((0, 1, 1), (1, 70, 3), (2, 33, 8), (3, 5, 1)):
        sampled, greedy = random_grades(seed, rows, k)
        totals = RunTotals(k)
        for samples, g in zip(sampled, greedy, strict=True):
            totals.add(g, samples)
        expected = eval_metrics(sampled, greedy, k)
        got = totals.metrics()
        assert list(got) == list(expected)
        for name, value in expected.items():
            assert got[name] == pytest.approx(value), name
        assert totals.result_counts() == result_counts(greedy)
    assert RunTotals(2).metrics() == {
        "reward_mean": None,
        "greedy_reward_mean": None,
        "pass@1": None,
        "pass@2": None,
        "greedy_pass@1": None,
        "grader_errors": 0.0,
    }


def write_rows(path, count: int) -> None:
    path.write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": str(i)}], "a": "1"}) + "\n" for i in range(count))
    )


def test_a_run_keeps_no_answer_text_once_its_chunk_is_stored(store, tmp_path) -> None:
    """Chunk after chunk, the run's memory stays flat: the answers of stored chunks are let go
    (before, every RowResult with its texts was kept for the whole run and re-summarised)."""
    data = tmp_path / "rows.jsonl"
    write_rows(data, 4 * ROWS_PER_GRADE)
    evaluation = store.create_eval("alice", {"name": "e"})
    traced: list[int] = []

    async def sample(messages, n, temperature, seed):
        return Answers([f"{messages[0]['content']}-{j}-" + "x" * 50_000 for j in range(n)], ["length"] * n)

    async def grade(pairs):
        gc.collect()
        traced.append(tracemalloc.get_traced_memory()[0])  # the chunk's answers, and what is kept
        return [Graded(1.0, True) for _ in pairs]

    async def scenario():
        runner = EvalRunner(store)
        run_ = store.create_run(evaluation.id, "alice", {}, {})
        runner.submit(plan(run_.id, data, sample, grade, n=2, rows=4 * ROWS_PER_GRADE))
        while store.get_run(evaluation.id, run_.id, "alice").status != COMPLETED:
            await asyncio.sleep(0.01)
        return run_

    tracemalloc.start()
    try:
        run_ = run(scenario())
    finally:
        tracemalloc.stop()
    chunk_bytes = ROWS_PER_GRADE * 3 * 50_000
    assert len(traced) == 4
    assert traced[3] - traced[1] < chunk_bytes / 2, [t // 1_000_000 for t in traced]  # was 2 chunks' worth
    finished = store.get_run(evaluation.id, run_.id, "alice")
    assert finished.results["result_counts"]["passed"] == 4 * ROWS_PER_GRADE
    assert finished.results["progress"]["items_done"] == 4 * ROWS_PER_GRADE
    assert len(store.list_output_items(run_.id, 1000)) == 4 * ROWS_PER_GRADE


def test_a_run_whose_eval_is_deleted_stops_sampling(store, tmp_path) -> None:
    """The eval goes while the run samples (its rows with it): the run stops at its next
    chunk instead of sampling the rest of the file for nobody."""
    rows = 3 * ROWS_PER_GRADE
    data = tmp_path / "rows.jsonl"
    write_rows(data, rows)
    evaluation = store.create_eval("alice", {"name": "e"})
    asked: set[int] = set()
    gate = asyncio.Event

    async def scenario():
        opened = gate()

        async def sample(messages, n, temperature, seed):
            index = int(messages[0]["content"])
            asked.add(index)
            if index >= ROWS_PER_GRADE:
                await opened.wait()
            return Answers(["1"] * n, ["stop"] * n)

        async def grade(pairs):
            return [Graded(1.0, True) for _ in pairs]

        runner = EvalRunner(store)
        run_ = store.create_run(evaluation.id, "alice", {}, {})
        runner.submit(plan(run_.id, data, sample, grade, rows=rows))
        while len(store.list_output_items(run_.id, 1000)) < ROWS_PER_GRADE:
            await asyncio.sleep(0.01)
        store.delete_eval(evaluation.id, "alice")  # not through the runner: its row is simply gone
        opened.set()
        await asyncio.wait_for(asyncio.gather(*runner._tasks.values()), timeout=30)

    run(scenario())
    assert max(asked) < 2 * ROWS_PER_GRADE  # the third chunk was never sampled


def test_cancel_eval_stops_its_queued_and_running_runs_only(store, tmp_path) -> None:
    data = tmp_path / "rows.jsonl"
    write_rows(data, 3)
    first, second = store.create_eval("alice", {"name": "a"}), store.create_eval("alice", {"name": "b"})
    stopped: list[str] = []

    async def scenario():
        sampling: set[str] = set()

        def slow(name: str):
            async def sample(messages, n, temperature, seed):
                sampling.add(name)
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    stopped.append(name)
                    raise

            return sample

        async def grade(pairs):
            return [Graded(1.0, True) for _ in pairs]

        runner = EvalRunner(store)
        running = store.create_run(first.id, "alice", {}, {})
        runner.submit(plan(running.id, data, slow("running"), grade, eval_id=first.id))
        queued = store.create_run(first.id, "alice", {}, {})
        runner.submit(plan(queued.id, data, slow("queued"), grade, eval_id=first.id))
        other = store.create_run(second.id, "alice", {}, {})
        runner.submit(plan(other.id, data, slow("other"), grade, eval_id=second.id))
        while "running" not in sampling:
            await asyncio.sleep(0.01)
        store.delete_eval(first.id, "alice")
        await asyncio.wait_for(runner.cancel_eval(first.id), timeout=10)
        assert set(stopped) == {"running"}  # its 3 rows' requests, canceled; the queued run never sampled
        assert set(runner._tasks) == {other.id}  # the other eval's run goes on
        while "other" not in sampling:
            await asyncio.sleep(0.01)
        await runner.cancel(other.id)
        assert store.get_run(second.id, other.id, "alice").status == CANCELED

    run(scenario())
    assert set(stopped) == {"running", "other"}


def test_queued_runs_take_the_slot_tenant_by_tenant(store, tmp_path) -> None:
    """Alice queues three runs, then Bob one: Bob's runs second, not after all of Alice's."""
    data = tmp_path / "rows.jsonl"
    write_rows(data, 1)
    order: list[str] = []

    async def scenario():
        runner = EvalRunner(store)
        release = asyncio.Event()

        def sampler_of(name: str):
            async def sample(messages, n, temperature, seed):
                if not order or order[-1] != name:
                    order.append(name)
                if name == "alice-1":
                    await release.wait()
                return Answers(["1"] * n, ["stop"] * n)

            return sample

        async def grade(pairs):
            return [Graded(1.0, True) for _ in pairs]

        runs = []
        for owner, name in (("alice", "alice-1"), ("alice", "alice-2"), ("alice", "alice-3"), ("bob", "bob-1")):
            evaluation = store.create_eval(owner, {"name": name})
            run_ = store.create_run(evaluation.id, owner, {}, {})
            runner.submit(plan(run_.id, data, sampler_of(name), grade, rows=1, owner=owner))
            runs.append((evaluation.id, run_.id, owner))
            await asyncio.sleep(0.01)  # in this order
        release.set()
        await asyncio.wait_for(asyncio.gather(*runner._tasks.values()), timeout=30)
        return runs

    runs = run(scenario())
    assert order == ["alice-1", "bob-1", "alice-2", "alice-3"]
    assert all(store.get_run(e, r, o).status == COMPLETED for e, r, o in runs)


def test_fair_slots_pass_a_slot_on_when_its_waiter_is_canceled() -> None:
    async def scenario():
        slots = FairSlots(1)
        entered: list[str] = []

        async def use(owner: str, hold: asyncio.Event):
            async with slots.slot(owner):
                entered.append(owner)
                await hold.wait()

        hold_a, hold_b, hold_c = asyncio.Event(), asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(use("a", hold_a))
        await asyncio.sleep(0)
        b = asyncio.create_task(use("b", hold_b))
        c = asyncio.create_task(use("c", hold_c))
        await asyncio.sleep(0)
        hold_a.set()
        await asyncio.sleep(0)  # a leaves and hands b the slot; b has not run yet
        assert a.done() and not b.done()
        b.cancel()  # granted the slot, canceled before it ran: the slot goes on to c
        hold_c.set()
        await asyncio.wait_for(c, timeout=5)
        with contextlib.suppress(asyncio.CancelledError):
            await b
        assert entered == ["a", "c"] and slots.free == 1

    run(scenario())


def test_a_tenant_has_at_most_so_many_active_runs(store) -> None:
    evaluation = store.create_eval("alice", {"name": "e"})
    bobs = store.create_eval("bob", {"name": "b"})
    runs = [store.create_run(evaluation.id, "alice", {}, {}, max_active=2) for _ in range(2)]
    with pytest.raises(TooManyRuns) as refused:
        store.create_run(evaluation.id, "alice", {}, {}, max_active=2)
    assert refused.value.active == 2
    store.create_run(bobs.id, "bob", {}, {}, max_active=2)  # bob's count is his own
    store.set_run_status(runs[0].id, COMPLETED)
    store.create_run(evaluation.id, "alice", {}, {}, max_active=2)
    assert MAX_ACTIVE_RUNS_PER_TENANT == 4


def test_a_run_over_the_token_budget_is_refused_naming_its_fields() -> None:
    settings = SamplingSettings(n=64, temperature=1.0, top_p=1.0, max_completion_tokens=32768, seed=0)
    assert run_size_issue(9, settings) is None  # 9 x 65 x 32768 = 19.2M
    issue = run_size_issue(10, settings)
    assert issue and "n 64" in issue and "max_completion_tokens 32768" in issue and "10 rows" in issue
    assert "20,000,000" in issue and MAX_RUN_COMPLETION_TOKENS == 20_000_000
    assert run_size_issue(1_000_000, SamplingSettings(1, 1.0, 1.0, 10, 0)) is None


class ThreadRecordingDatabase(Database):
    """The learner's database, noting which thread each read and write runs on."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.threads: list[tuple[int, str]] = []

    def query(self, sql: str, params: tuple = ()):
        self.threads.append((threading.get_ident(), sql.split()[0] + " " + sql.split("FROM")[-1].split()[0]))
        return super().query(sql, params)

    @contextlib.contextmanager
    def transaction(self):
        self.threads.append((threading.get_ident(), "transaction"))
        with super().transaction() as conn:
            yield conn


def test_the_routes_read_the_database_off_the_event_loop(tmp_path) -> None:
    """The eval routes (the real ones, on a bare FastAPI app with the API's error handlers) never
    touch SQLite on the event loop's thread; and a null name in an update leaves the name."""
    import httpx
    from fastapi import FastAPI
    from rft_learner.http_api import errors
    from rft_learner.http_api.evals import register

    db = ThreadRecordingDatabase(tmp_path / "learner.db")
    store = EvalStore(db)
    evaluation = store.create_eval(
        "alice",
        {"name": "e", "item_schema": {}, "include_sample_schema": False, "testing_criteria": [{}], "metadata": None},
    )
    run_ = store.create_run(evaluation.id, "alice", {"name": "r", "data_source": {"model": "m"}, "metadata": None}, {
        "result_counts": {}, "per_testing_criteria_results": [], "per_model_usage": [], "metrics": {}, "progress": {}
    })  # fmt: skip
    store.set_run_status(run_.id, COMPLETED)
    store.add_output_items(run_.id, [(0, "pass", {"datasource_item": {}, "results": [], "sample": {}, "greedy": {},
                                                  "samples": []})])  # fmt: skip
    saved = store.save_grader("alice", "g", {"type": "string_check"})

    app = FastAPI()
    errors.install(app)

    @app.middleware("http")
    async def tenant(request, call_next):
        request.scope["rft_tenant"] = "alice"
        return await call_next(request)

    async def scenario():
        register(app, types.SimpleNamespace(jobs=types.SimpleNamespace(store=types.SimpleNamespace(db=db))))
        loop_thread = threading.get_ident()
        db.threads.clear()
        e, r = f"/v1/evals/{evaluation.id}", f"/v1/evals/{evaluation.id}/runs/{run_.id}"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://learner") as client:
            answers = [
                await client.get(e),
                await client.post(e, json={"name": None}),
                await client.get("/v1/evals"),
                await client.get(f"{e}/runs"),
                await client.get(r),
                await client.get(f"{r}/output_items"),
                await client.get(f"{r}/output_items/{output_item_id(run_.id, 0)}"),
                await client.get(f"/v1/graders/{saved.id}"),
                await client.delete(r),
                await client.delete(f"/v1/graders/{saved.id}"),
                await client.delete(e),
            ]
            assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]
            assert answers[1].json()["name"] == "e" and answers[2].json()["data"][0]["name"] == "e"
            on_loop = [what for thread, what in db.threads if thread == loop_thread]
            assert db.threads and on_loop == [], on_loop
            limit = await client.get(f"{r}/output_items", params={"limit": 101})
            assert limit.status_code == 400 and limit.json()["error"]["param"] == "limit"  # at most 100

    run(scenario())
    db.close()
