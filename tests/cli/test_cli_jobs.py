"""`rft jobs` / `checkpoints` / `models` against a real learner (no training: the lead's
demo test runs a whole job through the CLI), and the watch view on a synthetic stream."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

from cli_helpers import STRING_CHECK, write_json, write_jsonl
from google.protobuf.timestamp_pb2 import Timestamp
from rft.learner.v1 import fine_tuning_pb2 as ft
from rft_cli import models, watch

GOOD = {"messages": [{"role": "user", "content": "2+2="}], "answer": "4"}


def test_create_refusals_name_the_field(cli, tmp_path, minimal_model) -> None:
    spec = write_json(tmp_path / "spec.json", STRING_CHECK)
    train = write_jsonl(tmp_path / "train.jsonl", [GOOD] * 4)
    train_id = cli.json("files", "upload", str(train))["file"]["id"]

    no_model = cli(
        "jobs", "create", "--model", str(tmp_path / "nowhere"), "--training-file", train_id, "--grader-spec", str(spec)
    )
    assert no_model.returncode == 1 and "model:" in no_model.stderr and "INVALID_ARGUMENT" in no_model.stderr

    common = ["jobs", "create", "--model", str(minimal_model), "--training-file", train_id, "--grader-spec", str(spec)]
    clip = cli(*common, "--clip-range", "5")
    assert clip.returncode == 1 and "method.reinforcement.hyperparameters.clip_range" in clip.stderr
    group = cli(*common, "--group-size", "1")
    assert group.returncode == 1 and "group_size" in group.stderr
    warmup = cli(*common, "--sft-warmup-epochs", "1", "--sft-answer-field", "nope")
    assert warmup.returncode == 1 and "sft_answer_field" in warmup.stderr and "line 1" in warmup.stderr
    # Everything local is valid; the learner cannot reach its grader and says so.
    grader = cli(*common)
    assert grader.returncode == 1 and "method.reinforcement.grader" in grader.stderr

    # A local path is uploaded first, and removed again when the job is refused.
    before = {f["id"] for f in cli.json("files", "list").get("files", [])}
    by_path = cli(
        "jobs",
        "create",
        "--model",
        str(minimal_model),
        "--training-file",
        str(train),
        "--grader-spec",
        str(spec),
        "--kl-coef",
        "-1",
    )
    assert by_path.returncode == 1 and "kl_coef" in by_path.stderr and "uploaded" in by_path.stderr
    assert {f["id"] for f in cli.json("files", "list").get("files", [])} == before
    assert cli.json("jobs", "list").get("jobs", []) == []


def test_create_usage_errors_exit_2(cli, tmp_path) -> None:
    bad_spec = tmp_path / "spec.json"
    bad_spec.write_text('{"type": "string_check",\n  "name": "x"\n  "input": 1}')
    common = ["jobs", "create", "--model", str(tmp_path), "--training-file", "file-x"]
    result = cli(*common, "--grader-spec", str(bad_spec))
    assert result.returncode == 2
    assert f"grader spec {bad_spec}: invalid JSON at line 3, column 3" in result.stderr
    missing = cli(*common, "--grader-spec", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "none.json: no such file" in missing.stderr
    no_grader = cli(*common)
    assert no_grader.returncode == 2 and "--grader-spec" in no_grader.stderr
    sft = cli(*common, "--method", "supervised", "--answer-field", "answer", "--group-size", "4")
    assert sft.returncode == 2 and "--group-size only apply to --method reinforcement" in sft.stderr
    both = cli(*common, "--grader-spec", "a.json", "--grader-id", "g")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_unknown_job_everywhere_is_exit_1(cli, tmp_path) -> None:
    for command in (
        ["jobs", "get", "ftjob-nope"],
        ["jobs", "cancel", "ftjob-nope"],
        ["jobs", "pause", "ftjob-nope"],
        ["jobs", "resume", "ftjob-nope"],
        ["jobs", "watch", "ftjob-nope"],
        ["checkpoints", "list", "ftjob-nope"],
        ["models", "export", "ftjob-nope", "--out", str(tmp_path / "out")],
    ):
        result = cli(*command)
        assert result.returncode == 1, (command, result.stderr)
        assert "NOT_FOUND" in result.stderr and "ftjob-nope" in result.stderr
    assert cli("jobs", "list").stdout.strip() == "(no jobs)"


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _job(status: int, trained: int, **extra) -> ft.Job:
    return ft.Job(id="ftjob-1", status=status, trained_steps=trained, total_steps=10, **extra)


def test_watch_plain_lines_eta_and_end_table() -> None:
    """The plain view and the end report, fed a synthetic stream (replay duplicates included)."""
    state = watch.WatchState()
    state.job = _job(ft.JOB_STATUS_RUNNING, 0)
    view = watch.PlainView(state)
    updates = [
        ft.WatchJobResponse(event=ft.JobEvent(seq=1, time=_stamp(0), message="job created")),
        ft.WatchJobResponse(job=_job(ft.JOB_STATUS_RUNNING, 0)),
        ft.WatchJobResponse(
            metrics=ft.MetricsPoint(step=0, time=_stamp(1), values={"valid_reward_mean": 0.25, "pass@1": 0.2})
        ),
    ]
    for step in (1, 2, 3, 4):
        updates.append(
            ft.WatchJobResponse(
                metrics=ft.MetricsPoint(step=step, time=_stamp(10 * step), values={"train_reward_mean": 0.1 * step})
            )
        )
        updates.append(ft.WatchJobResponse(job=_job(ft.JOB_STATUS_RUNNING, step)))
    updates.append(updates[0])  # a replayed event after a reconnect is shown once
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for update in updates:
            kind = update.WhichOneof("update")
            payload = getattr(update, kind)
            if (kind == "event" and not state.new_event(payload)) or (
                kind == "metrics" and not state.new_metrics(payload)
            ):
                continue
            if kind == "job":
                state.job = payload
            view.update(kind, payload)
    lines = out.getvalue().splitlines()
    assert sum("job created" in line for line in lines) == 1
    assert "status: running" in lines
    assert any(line.startswith("step 0 validation: valid_reward_mean 0.250") for line in lines)
    # 10 s per step, 6 steps left after step 4 -> ETA 1m00s.
    assert lines[-1] == "step 4/10  train reward 0.400  valid reward 0.250  ETA 1m00s"
    assert state.eta_seconds() == 60.0

    done = _job(
        ft.JOB_STATUS_SUCCEEDED, 10, base_metrics={"valid_reward_mean": 0.25}, final_metrics={"valid_reward_mean": 0.5}
    )
    done.fine_tuned_model = "/data/models/ftjob-1"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        watch.report_end(argparse.Namespace(json=False), done)
    text = out.getvalue()
    assert "job ftjob-1 succeeded" in text and "rft models export ftjob-1" in text
    assert [line.split() for line in text.splitlines() if line.startswith("valid_reward_mean")] == [
        ["valid_reward_mean", "0.250", "0.500", "+0.250"]
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        watch.report_end(argparse.Namespace(json=True), done)
    assert json.loads(out.getvalue())["job"]["final_metrics"] == {"valid_reward_mean": 0.5}


def test_export_checks_and_copies_a_model_directory(minimal_model, tmp_path) -> None:
    files = models.copy_model(minimal_model, tmp_path / "out", force=False)
    assert {f["file"] for f in files} == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert models.model_problems(tmp_path / "out") == []
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert models.model_problems(broken) == [
        "no *.safetensors weights",
        "no tokenizer (tokenizer.json / tokenizer.model / vocab.json)",
    ]
    try:
        models.copy_model(minimal_model, tmp_path / "out", force=False)
    except models.CliError as exc:
        assert "--force" in exc.message
    else:
        raise AssertionError("a non-empty --out must be refused without --force")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]  # no staging left behind
