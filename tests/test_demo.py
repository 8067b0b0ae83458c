"""A shortened `make demo` through the CLI: the table, the plot, and an exported model
that the rollout service serves (via `rft evals run`)."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

from service_process import ServiceProcess

REPO = pathlib.Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo"
BIN = pathlib.Path(sys.executable).parent


def shortened_task(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir()
    for name, lines in (("train.jsonl", 64), ("valid.jsonl", 40)):
        head = DEMO.joinpath(name).read_text().splitlines()[:lines]
        folder.joinpath(name).write_text("\n".join(head) + "\n")
    shutil.copy(DEMO / "grader.json", folder / "grader.json")
    job = json.loads((DEMO / "job.json").read_text())
    folder.joinpath("job.json").write_text(json.dumps({**job, "n_epochs": 2, "eval_interval": 2}))
    return folder


def test_shortened_demo_through_the_cli(tmp_path) -> None:
    data = shortened_task(tmp_path / "task")
    workdir = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--data", str(data), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    # The base vs fine-tuned table, with the validation reward row.
    assert "BASE" in out and "FINE-TUNED" in out
    assert any(line.startswith("valid_reward_mean") for line in out.splitlines()), out[-2000:]
    assert "4/4 steps" in out
    # The OpenAI-compatible API was up, and the fine-tuned model's name under it is printed.
    assert "OpenAI-compatible API: base_url=http://127.0.0.1:" in out
    assert "web console: http://127.0.0.1:" in out and "/console/" in out
    assert "model 'ft:demo-base:default:demo:ftjob-" in out

    plot = workdir / "reward.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000

    exported = workdir / "fine-tuned-model"
    assert (exported / "config.json").is_file() and list(exported.glob("*.safetensors"))

    # The exported directory is a model the rollout service loads and serves.
    with ServiceProcess("rft-grader", ["--data-dir", str(tmp_path / "grader")]) as grader:
        evals = subprocess.run(
            [
                str(BIN / "rft"), "--grader", grader.address, "--json", "evals", "run",
                "--file", str(data / "valid.jsonl"), "--grader-spec", str(data / "grader.json"),
                "--samples", "2", str(exported),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
    assert evals.returncode == 0, evals.stdout[-2000:] + evals.stderr[-2000:]
    assert str(exported) in evals.stdout
