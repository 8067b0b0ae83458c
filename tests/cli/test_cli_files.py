"""`rft files` against a real learner, and what every command does when a service is down."""

from __future__ import annotations

from cli_helpers import Cli, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "2+2="}], "answer": "4"}


def test_files_round_trip(cli, tmp_path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD] * 3)
    uploaded = cli.json("files", "upload", str(path))["file"]
    assert uploaded["filename"] == "train.jsonl" and uploaded["line_count"] == "3"
    file_id = uploaded["id"]

    listed = cli("files", "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == ["ID", "FILENAME", "EXAMPLES", "BYTES", "CREATED"]
    assert any(line.startswith(file_id) and " 3 " in line for line in listed.stdout.splitlines())
    assert file_id in [f["id"] for f in cli.json("files", "list")["files"]]

    assert cli.json("files", "get", file_id)["file"]["sha256"]
    deleted = cli("files", "delete", file_id)
    assert deleted.returncode == 0 and f"deleted {file_id}" in deleted.stdout
    again = cli("files", "get", file_id)
    assert again.returncode == 1 and "NOT_FOUND" in again.stderr


def test_bad_file_is_refused_with_line_numbers(cli, tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n{not json\n{"answer": "no messages"}\n')
    result = cli("files", "upload", str(path))
    assert result.returncode == 1, result.stderr
    assert "line 2: invalid JSON" in result.stderr and "line 3: missing field 'messages'" in result.stderr
    assert "line 1" not in result.stderr
    missing = cli("files", "upload", str(tmp_path / "nowhere.jsonl"))
    assert missing.returncode == 2 and "nowhere.jsonl: no such file" in missing.stderr


def test_unreachable_services_exit_3_with_a_hint(tmp_path) -> None:
    cli = Cli("127.0.0.1:1", "127.0.0.1:1")
    learner = cli("jobs", "list")
    assert learner.returncode == 3, learner.stderr
    assert "cannot reach the learner at 127.0.0.1:1" in learner.stderr and "make serve-learner" in learner.stderr
    spec = tmp_path / "spec.json"
    spec.write_text('{"type": "string_check"}')
    grader = cli("graders", "validate", str(spec))
    assert grader.returncode == 3 and "make serve-grader" in grader.stderr and "--grader" in grader.stderr


def test_usage_errors_exit_2_and_help_works() -> None:
    cli = Cli()
    assert cli("jobs").returncode == 2
    assert cli("jobs", "create", "--model", "m").returncode == 2  # --training-file is required
    for command in (["--help"], ["jobs", "create", "--help"], ["graders", "run", "--help"], ["evals", "run", "--help"]):
        result = cli(*command)
        assert result.returncode == 0 and "usage: rft" in result.stdout
