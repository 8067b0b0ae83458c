"""Evaluation runs: sample a model on every row of a file (one greedy answer and K sampled
ones), grade each answer, and summarise as OpenAI's result counts plus the suite's metrics
(reward mean, pass@1 / pass@K, greedy pass@1, the grader's top@k and sub-scores).

Plain Python: the model and the grader come in as two small callables (`Sampler`,
`Grader`), so the HTTP routes (http_api/evals.py) wire in the inference pool and the
grader service, and tests can drive this with anything that answers.

Runs execute one at a time (a run holds its model's inference server), as background
asyncio tasks owned by `EvalRunner`, which takes tenants' queued runs in turn; rows are
sampled a few at a time and graded a chunk at a time, and each chunk's output items and
the run's running totals are stored as they finish (the answers' texts are not kept once
stored), so a reader sees progress and a canceled run keeps what it had graded. A run
whose row is gone (its eval or itself deleted) stops at its next chunk.

Tool-using runs (sampling_params.max_turns / tool_servers, ours): every answer is an
episode run by a rollout service (the sampler's business); an answer then carries what
the grader sees of it (its final answer, tool calls and messages, as the learner's
validation grades it: rft_common.episodes) and its episode, and the run reports the
episode metrics over its sampled answers as the learner's validation does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rft_learner.eval_store import CANCELED, COMPLETED, FAILED, IN_PROGRESS, INTERRUPTED, EvalStore
from rft_learner.rl.passk import mean_pass_at_k, pass_at_k

log = logging.getLogger(__name__)
ROWS_IN_FLIGHT = 8
"""Rows whose answers are being sampled at once (two requests each: greedy and K samples)."""
ROWS_PER_GRADE = 32
"""Rows graded in one grader call (K + 1 answers each)."""
MAX_ACTIVE_RUNS_PER_TENANT = 4
"""Runs one tenant may have queued or in progress at once; more are refused (429)."""
MAX_RUN_COMPLETION_TOKENS = 20_000_000
"""A run's completion-token budget: rows x (n + 1) x max_completion_tokens may not exceed it."""


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    n: int
    """K: sampled answers per row (ours); each row also gets one greedy answer."""
    temperature: float
    top_p: float
    max_completion_tokens: int
    seed: int | None
    max_turns: int = 0
    """Ours: model turns per episode (tool calls in between); 0 or 1 with no tool servers:
    single-turn answers."""
    tool_servers: tuple[str, ...] = ()
    """Ours: the rollout's tool servers the episodes may use."""

    @property
    def episodic(self) -> bool:
        """Whether every answer is a tool-using episode (as a job with these settings)."""
        return self.max_turns > 1 or bool(self.tool_servers)


@dataclasses.dataclass
class Answers:
    """One sampling request's answers and the tokens it used."""

    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    graded_as: list[Any] | None = None
    """Episodes: what the grader gets for each answer instead of its text (a SampleOutput
    with the tool calls and messages)."""
    episodes: list[dict[str, Any]] | None = None
    """Episodes: each answer's episode (rft_common.episodes.episode_json) and, under
    "messages", the episode in OpenAI's chat message format."""


@dataclasses.dataclass
class Graded:
    """One answer's grade; `error` ({code, message}) when it could not be sampled or graded."""

    score: float = 0.0
    passed: bool = False
    sub_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    error: dict[str, str] | None = None


class SamplingError(Exception):
    """This row could not be sampled (its answers are errors); the run goes on."""


class RunFailure(Exception):
    """The run cannot go on (model or grader unavailable, invalid grader)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def run_size_issue(rows: int, settings: SamplingSettings) -> str | None:
    """Why a run of `rows` rows is too big for one run, or None: its most completion tokens,
    rows x (n + 1) x max_completion_tokens, must fit MAX_RUN_COMPLETION_TOKENS."""
    budget = rows * (settings.n + 1) * settings.max_completion_tokens
    if budget <= MAX_RUN_COMPLETION_TOKENS:
        return None
    return (
        f"the run may generate up to {rows} rows x (n {settings.n} + 1 greedy) x max_completion_tokens"
        f" {settings.max_completion_tokens} = {budget:,} tokens; one run may generate at most"
        f" {MAX_RUN_COMPLETION_TOKENS:,}: lower sampling_params.n or max_completion_tokens, or split the file"
    )


# Sample one row: (messages, n, temperature, seed) -> Answers, or raise SamplingError / RunFailure.
Sampler = Callable[[list[dict[str, Any]], int, float, "int | None"], Awaitable[Answers]]
# Grade (answer, item) pairs -> one Graded per pair, in order, or raise RunFailure. The answer
# is its text, or for an episode what Answers.graded_as holds.
Grader = Callable[[list[tuple[Any, dict[str, Any]]]], Awaitable[list[Graded]]]


# -- the metrics ---------------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def eval_metrics(sampled: Sequence[Sequence[Graded]], greedy: Sequence[Graded], k: int) -> dict[str, float | None]:
    """Metrics over rows, with the names and meaning of `rft evals run` (cli/rft_cli/evals.py)
    and the learner's validation: `sampled[i]` holds row i's K answers, `greedy[i]` its greedy one.

    reward_mean        mean score of the K samples that graded (errors left out)
    greedy_reward_mean mean score of the greedy answers that graded
    pass@1, pass@K     unbiased pass@k (Chen et al. 2021) from each row's K samples, mean
                       over rows; an answer that errored counts as not passing
    greedy_pass@1      share of graded greedy answers that passed
    grader_errors      answers (samples and greedy) that errored
    top@1, ...         each metric the grader reports (ranked-list graders), mean over greedy
    sub_score.<name>   each sub-grader score (multi graders), mean over greedy
    A mean over nothing is None (JSON null), never NaN.
    """
    flat = [g for group in sampled for g in group if g.error is None]
    greedy_ok = [g for g in greedy if g.error is None]
    correct = [sum(1 for g in group if g.error is None and g.passed) for group in sampled]
    metrics: dict[str, float | None] = {
        "reward_mean": _mean([g.score for g in flat]),
        "greedy_reward_mean": _mean([g.score for g in greedy_ok]),
        "pass@1": mean_pass_at_k(correct, k, 1) if correct else None,
        f"pass@{k}": mean_pass_at_k(correct, k, k) if correct else None,
        "greedy_pass@1": _mean([1.0 if g.passed else 0.0 for g in greedy_ok]),
        "grader_errors": float(sum(len(group) for group in sampled) + len(greedy) - len(flat) - len(greedy_ok)),
    }
    for name in sorted({n for g in greedy_ok for n in g.metrics}):
        metrics[name] = _mean([g.metrics[name] for g in greedy_ok if name in g.metrics])
    for name in sorted({n for g in greedy_ok for n in g.sub_scores}):
        metrics[f"sub_score.{name}"] = _mean([g.sub_scores[name] for g in greedy_ok if name in g.sub_scores])
    return metrics


def result_counts(greedy: Sequence[Graded]) -> dict[str, int]:
    """OpenAI's counts, one per row, judged by the row's greedy answer."""
    errored = sum(1 for g in greedy if g.error is not None)
    passed = sum(1 for g in greedy if g.error is None and g.passed)
    return {"total": len(greedy), "passed": passed, "failed": len(greedy) - passed - errored, "errored": errored}


class RunTotals:
    """`eval_metrics` and `result_counts` kept as running sums: a chunk's rows are added once
    (O(rows) per chunk, nothing of them kept), and the summary is read at any time. Every
    metric is a mean or a count of per-row (or per-answer) values, so the sums give exactly
    what `eval_metrics` gives over all the rows added."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.rows = 0
        self.passed = 0
        self.errored = 0
        self.samples = 0
        self.sample_ok = 0
        self.sample_score = 0.0
        self.greedy_ok = 0
        self.greedy_score = 0.0
        self.pass_1 = 0.0
        self.pass_k = 0.0
        self.grader_metrics: dict[str, list[float]] = {}
        """name -> [sum, count] over the greedy answers that have it."""
        self.sub_scores: dict[str, list[float]] = {}
        self.episodes = 0
        self.turns = 0
        self.tool_calls = 0
        self.tool_errors = 0
        self.ends: dict[str, int] = {}

    def add(self, greedy: Graded, samples: Sequence[Graded], episodes: Sequence[dict[str, Any] | None] = ()) -> None:
        """One row: its greedy answer, its K samples and, for a tool-using run, the K
        samples' episodes (the episode metrics are over sampled answers, as the learner's
        validation's)."""
        for episode in episodes:
            if episode is not None:
                self.episodes += 1
                self.turns += episode["turns"]
                self.tool_calls += len(episode["tool_calls"])
                self.tool_errors += sum(1 for call in episode["tool_calls"] if call["is_error"])
                self.ends[episode["end"]] = self.ends.get(episode["end"], 0) + 1
        self.rows += 1
        self.samples += len(samples)
        correct = 0
        for g in samples:
            if g.error is None:
                self.sample_ok += 1
                self.sample_score += g.score
                correct += g.passed
        self.pass_1 += pass_at_k(self.k, correct, 1)
        self.pass_k += pass_at_k(self.k, correct, self.k)
        if greedy.error is not None:
            self.errored += 1
            return
        self.greedy_ok += 1
        self.greedy_score += greedy.score
        self.passed += bool(greedy.passed)
        for into, values in ((self.grader_metrics, greedy.metrics), (self.sub_scores, greedy.sub_scores)):
            for name, value in values.items():
                total = into.setdefault(name, [0.0, 0])
                total[0] += value
                total[1] += 1

    def result_counts(self) -> dict[str, int]:
        failed = self.rows - self.passed - self.errored
        return {"total": self.rows, "passed": self.passed, "failed": failed, "errored": self.errored}

    def metrics(self) -> dict[str, float | None]:
        def mean(total: float, count: int) -> float | None:
            return total / count if count else None

        k = self.k
        metrics: dict[str, float | None] = {
            "reward_mean": mean(self.sample_score, self.sample_ok),
            "greedy_reward_mean": mean(self.greedy_score, self.greedy_ok),
            "pass@1": mean(self.pass_1, self.rows),
            f"pass@{k}": mean(self.pass_k, self.rows),
            "greedy_pass@1": mean(self.passed, self.greedy_ok),
            "grader_errors": float(self.samples + self.rows - self.sample_ok - self.greedy_ok),
        }
        for name in sorted(self.grader_metrics):
            metrics[name] = mean(*self.grader_metrics[name])
        for name in sorted(self.sub_scores):
            metrics[f"sub_score.{name}"] = mean(*self.sub_scores[name])
        if self.episodes:
            metrics["episode_turns_mean"] = self.turns / self.episodes
            metrics["tool_calls_mean"] = self.tool_calls / self.episodes
            metrics["tool_error_rate"] = self.tool_errors / self.tool_calls if self.tool_calls else 0.0
            for end in sorted(self.ends):
                metrics[f"episode_end.{end}"] = float(self.ends[end])
        return metrics


@dataclasses.dataclass
class RowResult:
    index: int
    row: dict[str, Any]
    greedy_text: str
    greedy_finish: str
    greedy: Graded
    sample_texts: list[str]
    sample_finishes: list[str]
    samples: list[Graded]
    greedy_episode: dict[str, Any] | None = None
    sample_episodes: list[dict[str, Any] | None] = dataclasses.field(default_factory=list)


def summary(totals: RunTotals, criterion: str, total_rows: int, usage: dict[str, Any]) -> dict:
    """The run's results object (stored, and returned by the API with the run)."""
    counts = totals.result_counts()
    return {
        "result_counts": counts,
        "per_testing_criteria_results": [
            {"testing_criteria": criterion, "passed": counts["passed"], "failed": counts["failed"]}
        ],
        "metrics": totals.metrics(),
        "per_model_usage": [usage] if usage.get("invocation_count") else [],
        "progress": {"items_done": totals.rows, "items_total": total_rows},
    }


def _graded_json(
    graded: Graded, text: str, finish: str, index: int | None = None, episode: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {} if index is None else {"index": index}
    out.update(
        output_text=text,
        finish_reason=finish,
        score=graded.score,
        passed=graded.passed,
        sub_scores=graded.sub_scores,
        metrics=graded.metrics,
        error=graded.error,
    )
    if episode is not None:  # ours: turns, end, tool calls and the episode's messages
        out["episode"] = episode
    return out


def _output_messages(text: str, episode: dict[str, Any] | None) -> list[dict[str, Any]]:
    """OpenAI's sample.output: the answer, or an episode's assistant and tool messages."""
    if episode is not None and episode.get("messages"):
        return episode["messages"]
    return [{"role": "assistant", "content": text}]


def item_status(row: RowResult) -> str:
    return "error" if row.greedy.error else "pass" if row.greedy.passed else "fail"


def output_item(row: RowResult, k: int, criterion: dict[str, str], model: str, settings: SamplingSettings) -> dict:
    """A row's stored output item: OpenAI's `sample` and `results` (the greedy answer) plus
    ours: `greedy`, the K `samples`, and the row's own pass counts."""
    correct = sum(1 for g in row.samples if g.error is None and g.passed)
    messages = row.row.get("messages", [])
    episodes = row.sample_episodes
    return {
        "datasource_item": row.row,
        "results": [
            {
                "name": criterion["name"],
                "type": criterion["type"],
                "score": row.greedy.score,
                "passed": row.greedy.passed,
                "sample": None,
                "sub_scores": row.greedy.sub_scores,
                "metrics": row.greedy.metrics,
                "error": row.greedy.error,
            }
        ],
        "sample": {
            "input": [{"role": m.get("role", "user"), "content": _text(m.get("content"))} for m in messages],
            "output": _output_messages(row.greedy_text, row.greedy_episode),
            "finish_reason": row.greedy_finish,
            "model": model,
            "error": row.greedy.error,
            "temperature": 0.0,
            "max_completion_tokens": settings.max_completion_tokens,
            "top_p": 1.0,
            "seed": settings.seed,
            "usage": None,
        },
        "greedy": _graded_json(row.greedy, row.greedy_text, row.greedy_finish, episode=row.greedy_episode),
        "samples": [
            _graded_json(g, t, f, i, episodes[i] if i < len(episodes) else None)
            for i, (g, t, f) in enumerate(zip(row.samples, row.sample_texts, row.sample_finishes, strict=True))
        ],
        "passed_samples": correct,
        "sample_reward_mean": _mean([g.score for g in row.samples if g.error is None]),
        "pass@1": correct / k,
        f"pass@{k}": mean_pass_at_k([correct], k, k),
    }


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI text parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


# -- the run -------------------------------------------------------------------------------------
def read_rows(path: str) -> list[dict[str, Any]]:
    """The file's rows (validated at upload: each an object with `messages`)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        raise RunFailure("file_not_found", "the run's file was deleted before the run started") from None


async def _all(*awaitables):
    """asyncio.gather that cancels (and waits for) the others when one fails, so a run
    that fails leaves no request behind it."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def evaluate_rows(
    rows: Sequence[dict[str, Any]],
    sample: Sampler,
    grade: Grader,
    settings: SamplingSettings,
    on_chunk: Callable[[list[RowResult]], Awaitable[None]],
) -> None:
    """Answer and grade every row; `on_chunk` gets each chunk's results in row order."""
    limit = asyncio.Semaphore(ROWS_IN_FLIGHT)
    k = settings.n

    async def answer(index: int, row: dict[str, Any]) -> tuple[Answers, Answers] | SamplingError:
        # Each row's K samples get seeds of their own (vLLM adds the sample's index).
        seed = None if settings.seed is None else settings.seed + index * k
        async with limit:
            try:
                greedy, sampled = await _all(
                    sample(row["messages"], 1, 0.0, settings.seed),
                    sample(row["messages"], k, settings.temperature, seed),
                )
            except SamplingError as exc:
                return exc
        return greedy, sampled

    for start in range(0, len(rows), ROWS_PER_GRADE):
        chunk = rows[start : start + ROWS_PER_GRADE]
        answered = await _all(*(answer(start + i, row) for i, row in enumerate(chunk)))
        pairs: list[tuple[Any, dict[str, Any]]] = []
        for row, outcome in zip(chunk, answered, strict=True):
            if not isinstance(outcome, SamplingError):
                item = {key: value for key, value in row.items() if key != "messages"}
                pairs += [(answer, item) for answer in (*_grader_inputs(outcome[0]), *_grader_inputs(outcome[1]))]
        grades = iter(await grade(pairs) if pairs else [])
        results = []
        for offset, (row, outcome) in enumerate(zip(chunk, answered, strict=True)):
            if isinstance(outcome, SamplingError):
                error = {"code": "sampling_error", "message": str(outcome)}
                results.append(
                    RowResult(
                        start + offset,
                        row,
                        "",
                        "",
                        Graded(error=error),
                        [""] * k,
                        [""] * k,
                        [Graded(error=error) for _ in range(k)],
                    )
                )
                continue
            greedy, sampled = outcome
            results.append(
                RowResult(
                    start + offset,
                    row,
                    greedy.texts[0],
                    greedy.finish_reasons[0],
                    next(grades),
                    sampled.texts,
                    sampled.finish_reasons,
                    [next(grades) for _ in sampled.texts],
                    greedy.episodes[0] if greedy.episodes else None,
                    list(sampled.episodes) if sampled.episodes else [],
                )
            )
        await on_chunk(results)
        del answered, pairs, results  # this chunk's answers are stored: let them go now


def _grader_inputs(answers: Answers) -> list[Any]:
    return list(answers.graded_as) if answers.graded_as is not None else list(answers.texts)


@dataclasses.dataclass
class RunPlan:
    """Everything a run needs, resolved and checked by the caller before it is queued."""

    run_id: str
    file_path: str
    total_rows: int
    settings: SamplingSettings
    criterion: dict[str, str]
    """The testing criterion's name and type."""
    model: str
    open_sampler: Callable[[], contextlib.AbstractAsyncContextManager[Sampler]]
    """Enter to get a ready sampler of the model (holds its inference server meanwhile)."""
    grade: Grader
    owner: str = ""
    """The tenant: queued runs take the free slot tenant by tenant, in turn."""
    eval_id: str = ""


class _RunGone(Exception):
    """The run's row was deleted or made final by someone else: stop, write nothing."""


class FairSlots:
    """`slots` runs at once; a freed slot goes to the tenant with waiting runs that was
    served least recently (round-robin over tenants), each tenant's runs in the order they
    came: one tenant's queue holds another's run back by at most one run per tenant."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self._waiting: dict[str, deque[asyncio.Future]] = {}
        self._served: dict[str, int] = {}
        """Tenant -> when it last got a slot (a counter; one entry per tenant ever seen)."""
        self._clock = 0

    @contextlib.asynccontextmanager
    async def slot(self, owner: str):
        await self._acquire(owner)
        try:
            yield
        finally:
            self._release()

    def _grant(self, owner: str) -> None:
        self._clock += 1
        self._served[owner] = self._clock

    async def _acquire(self, owner: str) -> None:
        if self.free > 0 and not self._waiting:
            self.free -= 1
            self._grant(owner)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot came with the cancel: pass it on
            else:
                queue = self._waiting.get(owner)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        del self._waiting[owner]
            raise

    def _release(self) -> None:
        while self._waiting:
            owner = min(self._waiting, key=lambda o: self._served.get(o, 0))  # ties: first to wait
            queue = self._waiting[owner]
            waiter = queue.popleft()
            if not queue:
                del self._waiting[owner]
            if not waiter.done():
                self._grant(owner)
                waiter.set_result(None)  # the slot passes to it as it is
                return
        self.free += 1


class EvalRunner:
    """Runs queued evaluation runs in the background, one at a time (tenants in turn), and
    cancels them."""

    def __init__(self, store: EvalStore, concurrent_runs: int = 1) -> None:
        self.store = store
        self._slots = FairSlots(concurrent_runs)
        self._tasks: dict[str, asyncio.Task] = {}
        self._plans: dict[str, RunPlan] = {}
        self._canceled: set[str] = set()
        interrupted = store.fail_unfinished(
            "the learner restarted while this run was queued or in progress; create it again"
        )
        if interrupted:
            log.warning("marked %d evaluation run(s) of a previous learner process as failed", interrupted)

    def submit(self, plan: RunPlan) -> None:
        task = asyncio.get_running_loop().create_task(self._execute(plan), name=f"eval-run-{plan.run_id}")
        self._tasks[plan.run_id] = task
        self._plans[plan.run_id] = plan

        def forget(_) -> None:
            if self._tasks.get(plan.run_id) is task:
                del self._tasks[plan.run_id]
                del self._plans[plan.run_id]

        task.add_done_callback(forget)

    async def cancel(self, run_id: str) -> None:
        """Stop a run (queued or in progress) and wait until it has stopped."""
        task = self._tasks.get(run_id)
        if task is None:
            await asyncio.to_thread(self.store.set_run_status, run_id, CANCELED)
            return
        self._canceled.add(run_id)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def cancel_eval(self, eval_id: str) -> None:
        """Stop every run of this eval that has a task here (queued or in progress)."""
        for run_id in [r for r, p in self._plans.items() if p.eval_id == eval_id]:
            await self.cancel(run_id)

    async def _execute(self, plan: RunPlan) -> None:
        totals = RunTotals(plan.settings.n)
        usage = {"model_name": plan.model, "invocation_count": 0, "prompt_tokens": 0, "completion_tokens": 0,
                 "total_tokens": 0, "cached_tokens": 0}  # fmt: skip

        def results() -> dict:
            return summary(totals, plan.criterion["name"], plan.total_rows, usage)

        async def counted(sample: Sampler, messages, n, temperature, seed) -> Answers:
            answers = await sample(messages, n, temperature, seed)
            usage["invocation_count"] += 1
            usage["prompt_tokens"] += answers.prompt_tokens
            usage["completion_tokens"] += answers.completion_tokens
            usage["cached_tokens"] += answers.cached_tokens
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            return answers

        async def on_chunk(chunk: list[RowResult]) -> None:
            k = plan.settings.n
            items = []
            for r in chunk:
                totals.add(r.greedy, r.samples, r.sample_episodes)
                items.append((r.index, item_status(r), output_item(r, k, plan.criterion, plan.model, plan.settings)))
            chunk.clear()  # the answers' texts live on in the stored items only
            if not await asyncio.to_thread(self.store.add_output_items, plan.run_id, items):
                raise _RunGone
            if not await asyncio.to_thread(self.store.set_run_status, plan.run_id, IN_PROGRESS, results()):
                raise _RunGone

        try:
            async with self._slots.slot(plan.owner):
                if not await asyncio.to_thread(self.store.set_run_status, plan.run_id, IN_PROGRESS):
                    return  # canceled or deleted while queued
                data = await asyncio.to_thread(read_rows, plan.file_path)
                async with plan.open_sampler() as sample:

                    async def sampler(messages, n, temperature, seed):
                        return await counted(sample, messages, n, temperature, seed)

                    await evaluate_rows(data, sampler, plan.grade, plan.settings, on_chunk)
            self.store.set_run_status(plan.run_id, COMPLETED, results())
        except _RunGone:
            log.info("evaluation run %s was deleted or finished elsewhere; stopped", plan.run_id)
        except asyncio.CancelledError:
            if plan.run_id in self._canceled:
                self._canceled.discard(plan.run_id)
                self.store.set_run_status(plan.run_id, CANCELED, results())
            else:  # the learner is stopping; the database may be closed already
                with contextlib.suppress(Exception):
                    self.store.set_run_status(
                        plan.run_id, FAILED, results(), (INTERRUPTED, "the learner stopped during this run")
                    )
            raise
        except RunFailure as exc:
            self.store.set_run_status(plan.run_id, FAILED, results(), (exc.code, exc.message))
        except Exception as exc:  # a bug: the run fails with a reason, the learner goes on
            log.exception("evaluation run %s failed", plan.run_id)
            self.store.set_run_status(plan.run_id, FAILED, results(), ("internal_error", type(exc).__name__))
