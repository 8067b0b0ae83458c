"""Alert rules and the Grafana dashboard, checked with promtool and against the metric
names the services export."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import subprocess

import pytest
import yaml
from rft_deploy_testlib import DEPLOY, HISTOGRAMS, KNOWN_METRICS, tool

OBS = DEPLOY / "observability"
METRIC = re.compile(r"\brft_[a-z_]+")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"rft_obs_{name}", OBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def promtool(*args: str, cwd: pathlib.Path = OBS) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((OBS / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((OBS / "alerts.yml").read_text())["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Base metric names an expression reads (histogram suffixes folded)."""
    names = set()
    for name in METRIC.findall(expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base if base in HISTOGRAMS else name)
    return names


def test_promtool_check_rules():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path: pathlib.Path):
    """A wrong expectation fails: the unit tests really evaluate the rules."""
    (tmp_path / "alerts.yml").write_text((OBS / "alerts.yml").read_text())
    tests = (OBS / "alerts.test.yml").read_text().replace("- eval_time: 58m", "- eval_time: 40m", 1)
    (tmp_path / "alerts.test.yml").write_text(tests)
    result = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "RFTTrainerStuck" in result.stdout + result.stderr


def test_required_alerts_exist_and_are_tested():
    names = {rule["alert"] for rule in alert_rules()}
    assert {"RFTTrainerStuck", "RFTGraderErrorRateHigh", "RFTRolloutUnavailable"} <= names
    tests = yaml.safe_load((OBS / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert tested == names, f"alerts without a firing test: {names - tested}"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_generated_files_are_up_to_date():
    assert (OBS / "grafana-dashboard.json").read_text() == load_script("build_dashboard").render(), (
        "run deploy/observability/build_dashboard.py"
    )
    assert (OBS / "prometheus-rule.yaml").read_text() == load_script("sync_rules").render(), (
        "run deploy/observability/sync_rules.py"
    )


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_only_exported_metric_names_are_used(source):
    exprs = dashboard_exprs() if source == "dashboard" else [rule["expr"] for rule in alert_rules()]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= KNOWN_METRICS, f"not exported by any service: {used - KNOWN_METRICS}"
    for expr in exprs:
        for name in METRIC.findall(expr):
            if name in HISTOGRAMS:
                pytest.fail(f"histogram {name} read without _bucket/_sum/_count: {expr}")


def test_dashboard_shows_what_operators_need():
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    for needed in [
        "rft_learner_train_reward_mean",
        "rft_learner_valid_reward_mean",
        "rft_learner_tokens_per_second",
        "rft_rollout_generated_tokens_total",
        "rft_learner_step_phase_seconds",
        "rft_grader_grade_seconds",
        "rft_grader_grades_total",
        "rft_learner_weight_sync_seconds",
        "rft_learner_policy_version_lag",
    ]:
        assert needed in used, needed


def test_dashboard_layout():
    dashboard = json.loads((OBS / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']} overlaps another"
                cells.add((x, y))
        for target in p.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job_id"}
