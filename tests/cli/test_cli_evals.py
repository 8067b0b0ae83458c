"""`rft evals run` with the real grader and a fake rollout service (vLLM is the lead's
demo test's business): temporary services per model, side-by-side table, top@k."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import grpc
from cli_helpers import BIN, HERE, write_json, write_jsonl
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_process import free_port

RANKED = {
    "type": "ranked_list",
    "name": "rank",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "score_metric": "top@1",
}
FAKE = f"{sys.executable} {HERE / 'fake_rollout.py'}"


def _model(root: pathlib.Path, style: str) -> pathlib.Path:
    directory = root / style
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "fake"}')
    (directory / "style").write_text(style)
    return directory


def _dataset(path: pathlib.Path, count: int = 10) -> pathlib.Path:
    rows = [
        {"messages": [{"role": "user", "content": f"{i}+{i + 3}="}], "answer": str(2 * i + 3)}
        for i in range(1, count + 1)
    ]
    return write_jsonl(path, rows)


def test_evals_side_by_side_with_temporary_rollouts(cli, tmp_path) -> None:
    good, bad = _model(tmp_path, "good"), _model(tmp_path, "bad")
    valid = _dataset(tmp_path / "valid.jsonl")
    spec = write_json(tmp_path / "rank.json", RANKED)
    args = ["evals", "run", "--file", str(valid), "--grader-spec", str(spec), "--samples", "3"]
    result = cli(*args, "--rollout-command", FAKE, str(good), str(bad))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[1].split()
    assert header == [
        "MODEL",
        "REWARD_MEAN",
        "GREEDY_REWARD_MEAN",
        "PASS@1",
        "PASS@3",
        "GREEDY_PASS@1",
        "TOP@1",
        "TOP@5",
        "TOP@MAX",
        "GRADER_ERRORS",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows[str(good)] == ["1.000"] * 8 + ["0"]
    assert rows[str(bad)] == ["0.000"] * 6 + ["1.000", "1.000", "0"]
    assert "10 prompts" in lines[0]
    for model in (good, bad):
        calls = (model / "calls").read_text().splitlines()
        assert calls[0] == "started" and calls[-1] == "SIGTERM"  # stopped gracefully at the end
        # 10 prompts in requests of at most 8 (the rollout's limit): 2 sampled + 2 greedy requests.
        assert sorted(c for c in calls if c.startswith("generate")) == [
            "generate prompts=2 n=1 temperature=0.0",
            "generate prompts=2 n=3 temperature=1.0",
            "generate prompts=8 n=1 temperature=0.0",
            "generate prompts=8 n=3 temperature=1.0",
        ]


def test_evals_json_against_a_running_rollout(cli, tmp_path) -> None:
    good = _model(tmp_path, "good")
    port = free_port()
    command = [sys.executable, str(HERE / "fake_rollout.py"), "serve", "--model", str(good), "--port", str(port)]
    proc = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            while True:
                try:
                    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if health.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "fake rollout did not start"
                time.sleep(0.2)
        valid = _dataset(tmp_path / "valid.jsonl", count=3)
        spec = write_json(tmp_path / "rank.json", RANKED)
        report = cli.json(
            "evals", "run", "--file", str(valid), "--grader-spec", str(spec), "--rollout", f"127.0.0.1:{port}"
        )
        assert report["prompts"] == 3 and report["samples"] == 4
        (model,) = report["models"]
        assert model["model"] == str(good)  # the served model's name when no label is given
        assert model["metrics"]["pass@4"] == 1.0 and model["metrics"]["top@1"] == 1.0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_evals_usage_and_failures(cli, tmp_path) -> None:
    valid = _dataset(tmp_path / "valid.jsonl", count=2)
    spec = write_json(tmp_path / "rank.json", RANKED)
    base = ["evals", "run", "--file", str(valid), "--grader-spec", str(spec)]
    no_model = cli(*base)
    assert no_model.returncode == 2 and "MODEL_DIR" in no_model.stderr
    not_a_model = cli(*base, str(tmp_path))
    assert not_a_model.returncode == 2 and "no config.json" in not_a_model.stderr
    bad_spec = write_json(tmp_path / "bad.json", {**RANKED, "score_metric": "top@2"})
    invalid = cli("evals", "run", "--file", str(valid), "--grader-spec", str(bad_spec), str(_model(tmp_path, "good")))
    assert invalid.returncode == 1 and "score_metric" in invalid.stderr
    broken = _model(tmp_path, "bad")
    (broken / "style").unlink()  # the fake rollout crashes on start: its log tail is shown
    crashed = cli(*base, "--rollout-command", FAKE, str(broken), env={"TMPDIR": str(tmp_path)})
    assert crashed.returncode == 1 and "exited with code" in crashed.stderr and "FileNotFoundError" in crashed.stderr
    (log,) = tmp_path.glob("rft-evals-rollout-*.log")  # kept for the user, named in the message
    assert str(log) in crashed.stderr
    dataset = tmp_path / "broken.jsonl"
    dataset.write_text('{"messages": []}\n{"messages": [{"role": "user", "content": "x"}]}\n')
    result = cli("evals", "run", "--file", str(dataset), "--grader-spec", str(spec), str(broken))
    assert result.returncode == 2 and "line 1: 'messages' must be a non-empty list" in result.stderr


def test_evals_interrupted_stops_its_rollout(cli_grader, tmp_path) -> None:
    hang = _model(tmp_path, "hang")  # never SERVING: the CLI waits for it
    valid = _dataset(tmp_path / "valid.jsonl", count=2)
    spec = write_json(tmp_path / "rank.json", RANKED)
    command = [str(BIN / "rft"), "--grader", cli_grader.address, "evals", "run", "--file", str(valid)]
    command += ["--grader-spec", str(spec), "--rollout-command", FAKE, str(hang)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    calls = hang / "calls"
    deadline = time.monotonic() + 30
    while not (calls.exists() and "started" in calls.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "the rollout was not started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert calls.read_text().splitlines()[-1] == "SIGTERM"
