"""`rft graders` against a real grader service."""

from __future__ import annotations

import json

from cli_helpers import STRING_CHECK, write_json, write_jsonl


def test_validate(cli, tmp_path) -> None:
    good = cli("graders", "validate", str(write_json(tmp_path / "good.json", STRING_CHECK)))
    assert good.returncode == 0 and "valid string_check grader" in good.stdout
    bad = write_json(tmp_path / "bad.json", {**STRING_CHECK, "operation": "equals", "refrence": "x"})
    result = cli("graders", "validate", str(bad))
    assert result.returncode == 1
    assert "operation:" in result.stdout and "refrence" in result.stdout
    report = json.loads(cli("graders", "validate", str(bad), "--json").stdout)
    assert report.get("valid") is not True and {i["field"] for i in report["issues"]} >= {"operation"}
    unreadable = tmp_path / "broken.json"
    unreadable.write_text('{"type": "string_check", }')
    result = cli("graders", "validate", str(unreadable))
    assert result.returncode == 2 and "invalid JSON at line 1, column 26" in result.stderr


def test_run_one_sample(cli, tmp_path) -> None:
    spec = str(write_json(tmp_path / "spec.json", STRING_CHECK))
    right = cli("graders", "run", spec, "--sample", "4", "--item", '{"answer": "4"}')
    assert right.returncode == 0, right.stderr
    assert right.stdout.splitlines()[1].split() == ["1", "1.000", "yes"]
    assert "mean score 1.000" in right.stdout
    wrong = cli.json("graders", "run", spec, "--sample", "5", "--item", '{"answer": "4"}')
    assert wrong["results"] == [{"line": 1, "score": 0.0, "passed": False, "metrics": {}, "sub_scores": {}}]
    assert wrong["summary"]["mean_score"] == 0.0 and wrong["summary"]["grader_type"] == "string_check"
    bad_item = cli("graders", "run", spec, "--sample", "4", "--item", '{"answer": 4')
    assert bad_item.returncode == 2 and "--item: invalid JSON at line 1, column" in bad_item.stderr
    nothing = cli("graders", "run", spec)
    assert nothing.returncode == 2 and "--sample" in nothing.stderr


def test_run_a_jsonl_file_with_summary(cli, tmp_path) -> None:
    spec = str(write_json(tmp_path / "spec.json", STRING_CHECK))
    samples = write_jsonl(
        tmp_path / "samples.jsonl",
        [
            {"sample": "4", "item": {"answer": "4"}},
            {"sample": {"output_text": "5"}, "item": {"answer": "4"}},
            # A dataset line plus the model's answer: the other fields are the item.
            {"messages": [{"role": "user", "content": "1+2="}], "answer": "3", "output_text": "3"},
            {"sample": "3", "item": {"solution": "3"}},  # the template names a missing field
        ],
    )
    text = cli("graders", "run", spec, "--file", str(samples))
    assert text.returncode == 0, text.stderr
    assert "4 sample(s), 3 graded, 1 error(s); mean score 0.667, pass rate 0.667" in text.stdout
    assert any(line.startswith("4 ") and "template" in line for line in text.stdout.splitlines())
    report = cli.json("graders", "run", spec, "--file", str(samples))
    assert [r.get("score") for r in report["results"]] == [1.0, 0.0, 1.0, None]
    assert report["results"][3]["error"]["kind"] == "template"
    assert report["summary"]["errors"] == 1 and abs(report["summary"]["mean_score"] - 2 / 3) < 1e-9
    assert cli("graders", "run", spec, "--file", str(samples), "--strict").returncode == 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample": "4", "item": {}}\n[1, 2]\n{"item": {}}\n{oops\n')
    result = cli("graders", "run", spec, "--file", str(bad))
    assert result.returncode == 2
    assert "line 2: expected a JSON object" in result.stderr and "line 4: invalid JSON at column 2" in result.stderr


def test_registry(cli, tmp_path) -> None:
    spec = str(write_json(tmp_path / "spec.json", STRING_CHECK))
    stored = cli.json("graders", "register", spec, "--name", "exact-cli", "--tenant", "team-a")["grader"]
    grader_id = stored["id"]
    assert stored["type"] == "string_check"
    again = cli("graders", "register", spec, "--name", "exact-cli", "--tenant", "team-a")
    assert again.returncode == 1 and "ALREADY_EXISTS" in again.stderr
    assert grader_id in cli("graders", "list", "--tenant", "team-a").stdout
    assert "exact-cli" not in cli("graders", "list").stdout  # another tenant's registry
    shown = cli("graders", "get", grader_id, "--tenant", "team-a")
    assert shown.returncode == 0 and '"operation": "eq"' in shown.stdout
    run = cli.json(
        "graders", "run", "--grader-id", grader_id, "--tenant", "team-a", "--sample", "4", "--item", '{"answer": "4"}'
    )
    assert run["results"][0]["score"] == 1.0
    assert cli("graders", "delete", grader_id, "--tenant", "team-a").returncode == 0
    assert cli("graders", "get", grader_id, "--tenant", "team-a").returncode == 1
    types = cli.json("graders", "types")
    assert "string_check" in {t["name"] for t in types["types"]}
