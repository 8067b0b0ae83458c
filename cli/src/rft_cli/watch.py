"""`rft jobs watch`: follow a job's WatchJob stream with a progress bar (rich, on a
terminal), plain lines (piped) or JSON lines (--json); end with base vs fine-tuned."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import grpc
from rft.learner.v1 import fine_tuning_pb2 as ft

from rft_cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    compare_metrics,
    duration,
    enum_name,
    error,
    fmt,
    metric_columns,
    print_json,
    print_table,
    to_dict,
)
from rft_cli.services import ServiceError, Stub

FINISHED = (ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED)
RECONNECT_SECONDS = 120.0
ETA_WINDOW = 20
EVAL_KEYS = ("valid_reward_mean", "valid_greedy_reward_mean", "pass@1", "greedy_pass@1", "top@1", "top@5", "top@max")
LEVELS = {ft.JOB_EVENT_LEVEL_WARNING: "WARNING", ft.JOB_EVENT_LEVEL_ERROR: "ERROR"}


def _seconds(stamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


class WatchState:
    """What the stream told so far; replays after a reconnect are deduplicated here."""

    def __init__(self) -> None:
        self.job: ft.Job | None = None
        self.last_event = 0
        self.seen_metrics: set[tuple[int, float]] = set()
        self.step_times: list[tuple[int, float]] = []
        self.train_reward: float | None = None
        self.loss: float | None = None
        self.valid_reward: float | None = None

    def new_event(self, event: ft.JobEvent) -> bool:
        if event.seq <= self.last_event:
            return False
        self.last_event = event.seq
        return True

    def new_metrics(self, point: ft.MetricsPoint) -> bool:
        key = (point.step, _seconds(point.time))
        if key in self.seen_metrics:
            return False
        self.seen_metrics.add(key)
        if is_training_step(point):
            self.train_reward = point.values.get("train_reward_mean", self.train_reward)
            self.loss = point.values.get("loss", self.loss)
            self.step_times.append((point.step, _seconds(point.time)))
        if "valid_reward_mean" in point.values:
            self.valid_reward = point.values["valid_reward_mean"]
        return True

    @property
    def status(self) -> str:
        return enum_name(ft.JobStatus, self.job.status, "JOB_STATUS_") if self.job else "?"

    def eta_seconds(self) -> float | None:
        """Remaining steps times the recent seconds per step (None until two steps are seen)."""
        if self.job is None or not self.job.total_steps or len(self.step_times) < 2:
            return None
        (first_step, first_time), (last_step, last_time) = self.step_times[-ETA_WINDOW:][0], self.step_times[-1]
        if last_step <= first_step:
            return None
        per_step = (last_time - first_time) / (last_step - first_step)
        done = max(self.job.trained_steps, last_step)  # step metrics may precede the job's progress update
        return max(0.0, (self.job.total_steps - done) * per_step)

    def summary(self) -> str:
        eta = self.eta_seconds()
        if self.train_reward is None and self.loss is not None:  # SFT (warm-up) steps have a loss, no reward
            parts = [f"loss {fmt(self.loss)}"]
        else:
            parts = [f"train reward {fmt(self.train_reward)}"]
        parts.append(f"valid reward {fmt(self.valid_reward)}")
        parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA ?")
        return "  ".join(parts)


def is_training_step(point: ft.MetricsPoint) -> bool:
    """An optimizer step's metrics (RL steps report a reward, SFT steps a loss), not an evaluation."""
    return "train_reward_mean" in point.values or "loss" in point.values


def _event_line(event: ft.JobEvent) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(_seconds(event.time)))
    level = LEVELS.get(event.level, "")
    return f"{when} {level + ': ' if level else ''}{event.message}"


def _eval_line(point: ft.MetricsPoint) -> str:
    keys = [k for k in EVAL_KEYS if k in point.values]
    keys += sorted(k for k in point.values if k.startswith("pass@") and k not in keys)
    return f"step {point.step} validation: " + "  ".join(f"{k} {fmt(point.values[k])}" for k in keys)


class PlainView:
    """One line per event, training step, validation and status change."""

    def __init__(self, state: WatchState) -> None:
        self.state = state
        self.status = ""

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def message(self, text: str) -> None:
        print(text, flush=True)

    def update(self, kind: str, payload) -> None:
        state = self.state
        if kind == "event":
            self.message(_event_line(payload))
        elif kind == "metrics":
            total = state.job.total_steps if state.job else 0
            if is_training_step(payload):
                self.message(f"step {payload.step}/{total}  {state.summary()}")
            elif any(k in payload.values for k in EVAL_KEYS):
                self.message(_eval_line(payload))
        elif kind == "job" and state.status != self.status:
            self.status = state.status
            self.message(f"status: {self.status}")


class JsonLinesView(PlainView):
    """Every update as one JSON line: {"event": ...}, {"metrics": ...} or {"job": ...}."""

    def update(self, kind: str, payload) -> None:
        print_json({kind: to_dict(payload)}, lines=True)


class RichView(PlainView):
    """A live progress bar (status, step/total, rewards, ETA) with events printed above it."""

    def __enter__(self) -> RichView:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TextColumn("{task.fields[info]}"),
            console=self.console,
        )
        self.progress.__enter__()
        job = self.state.job
        total = job.total_steps if job is not None and job.total_steps else None
        completed = job.trained_steps if job is not None else 0
        self.task = self.progress.add_task(self.state.status, total=total, completed=completed, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def update(self, kind: str, payload) -> None:
        state = self.state
        if kind == "event":
            self.message(_event_line(payload))
        elif kind == "metrics" and not is_training_step(payload):
            if any(k in payload.values for k in EVAL_KEYS):
                self.message(_eval_line(payload))
        job = state.job
        if job is not None:
            self.progress.update(
                self.task,
                description=state.status,
                total=job.total_steps or None,
                completed=job.trained_steps,
                info=state.summary(),
            )


def _view(args: argparse.Namespace, state: WatchState) -> PlainView:
    if args.json:
        return JsonLinesView(state)
    if sys.stdout.isatty():
        try:
            import rich  # noqa: F401
        except ImportError:
            return PlainView(state)
        return RichView(state)
    return PlainView(state)


async def _follow(stub: Stub, job_id: str, state: WatchState, view: PlainView) -> None:
    """Stream until the job ends; reconnect (with replay) if the learner goes away for a while."""
    deadline = None
    while True:
        try:
            async for update in stub.WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True)):
                deadline = None
                kind = update.WhichOneof("update")
                payload = getattr(update, kind)
                if kind == "event" and not state.new_event(payload):
                    continue
                if kind == "metrics" and not state.new_metrics(payload):
                    continue
                if kind == "job":
                    state.job = payload
                view.update(kind, payload)
            if state.job is not None and state.job.status in FINISHED:
                return
        except ServiceError as exc:
            if exc.status != grpc.StatusCode.UNAVAILABLE or state.job is None:
                raise
            if deadline is None:
                deadline = time.monotonic() + RECONNECT_SECONDS
                print(f"lost the stream ({exc.details}); reconnecting", file=sys.stderr)
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(1.0)


async def watch_job(args: argparse.Namespace, stub: Stub, job_id: str) -> int:
    """Follow `job_id` to its end; 0 when it succeeded, 1 when it failed or was cancelled."""
    state = WatchState()
    state.job = (await stub.GetJob(ft.GetJobRequest(job_id=job_id))).job  # totals for replayed steps
    try:
        with _view(args, state) as view:
            await _follow(stub, job_id, state, view)
    except asyncio.CancelledError:
        print(f"\nstopped watching; the job goes on (rft jobs watch {job_id})", file=sys.stderr)
        raise
    job = (await stub.GetJob(ft.GetJobRequest(job_id=job_id))).job
    report_end(args, job)
    return EXIT_OK if job.status == ft.JOB_STATUS_SUCCEEDED else EXIT_FAILED


def report_end(args: argparse.Namespace, job: ft.Job) -> None:
    status = enum_name(ft.JobStatus, job.status, "JOB_STATUS_")
    if args.json:
        print_json({"job": to_dict(job)}, lines=True)
    else:
        took = ""
        if job.finish_time.seconds and job.create_time.seconds:
            took = f" in {duration(_seconds(job.finish_time) - _seconds(job.create_time))}"
        print(f"\njob {job.id} {status}{took} ({job.trained_steps}/{job.total_steps} steps)")
        if job.base_metrics or job.final_metrics:
            print()
            print_table(
                compare_metrics(job.base_metrics, job.final_metrics, job.warmup_metrics),
                metric_columns(job.warmup_metrics),
            )
        if job.fine_tuned_model:
            print(f"\nfine-tuned model: {job.fine_tuned_model}")
            print(f"export it with: rft models export {job.id} --out DIR")
    if job.status == ft.JOB_STATUS_FAILED:
        error(f"job {job.id} failed: {job.error.code}: {job.error.message}")
    elif job.status == ft.JOB_STATUS_CANCELLED:
        error(f"job {job.id} was cancelled")
