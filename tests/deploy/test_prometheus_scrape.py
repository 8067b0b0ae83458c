"""A real Prometheus server scrapes the real services and answers through its HTTP API.

The three services run as their console entry points on free loopback ports
(tests/service_process.py); the rollout serves the tiny model that
scripts/build_base_model.py builds. Prometheus (Debian's package) runs on loopback with
a temporary config, a 1-second scrape interval, and our alert rules loaded. The test
then queries one metric of each service through /api/v1/query, checks the loaded rules
evaluate against live data, runs every dashboard query for parse and evaluation errors,
and checks the metric types the services expose against the names the dashboard uses.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc
import pytest
import yaml
from google.protobuf import struct_pb2
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_deploy_testlib import DEPLOY, HISTOGRAMS, KNOWN_METRICS, REPO, tool
from service_process import ServiceProcess, free_port

OBS = DEPLOY / "observability"
SCRAPE_JOBS = {"rollout": "rft-rollout", "grader": "rft-grader", "learner": "rft-learner"}


def build_tiny_model(out_dir: pathlib.Path) -> pathlib.Path:
    spec = importlib.util.spec_from_file_location("rft_build_base_model", REPO / "scripts" / "build_base_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.build_model(out_dir, preset="tiny")


class Prometheus:
    """`prometheus` on a free loopback port with a temporary config and TSDB."""

    def __init__(self, workdir: pathlib.Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        scrape_configs = [
            {
                "job_name": SCRAPE_JOBS[name],
                "static_configs": [{"targets": [target]}],
                # The learner's per-job metrics carry a `job` label of their own.
                "honor_labels": name == "learner",
            }
            for name, target in targets.items()
        ]
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(OBS / "alerts.yml")],
            "scrape_configs": scrape_configs,
        }
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.args = [
            tool("prometheus"),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Prometheus:
        check = subprocess.run(
            [tool("promtool"), "check", "config", str(self.config_file)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen(self.args, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready:\n{self.log.read_text()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400 / 422 carry the error as JSON
            body = json.loads(exc.read())
        return body

    def query(self, expr: str) -> list[dict]:
        body = self.api("query", query=expr)
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no result for {expr} after {timeout}s; targets: {self.api('targets')}")


def grade_once(address: str) -> None:
    """One real Grade call, so the grader's own counters have samples."""
    spec = struct_pb2.Struct()
    spec.update(
        {
            "type": "string_check",
            "name": "exact",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": "eq",
        }
    )
    item = struct_pb2.Struct()
    item.update({"answer": "4"})
    request = grader_pb2.GradeRequest(
        spec=spec, items=[grader_pb2.GradeItem(sample=grader_pb2.SampleOutput(output_text="4"), item=item)]
    )
    with grpc.insecure_channel(address) as channel:
        response = grader_pb2_grpc.GraderServiceStub(channel).Grade(request, timeout=30)
    assert len(response.results) == 1


def generate_once(address: str) -> None:
    """One real Generate call, so the rollout's token counters have samples."""
    request = rollout_pb2.GenerateRequest(
        prompts=[rollout_pb2.Prompt(text="2+2=")],
        sampling=rollout_pb2.SamplingParams(n=2, max_tokens=8, temperature=1.0, seed=0),
    )
    with grpc.insecure_channel(address) as channel:
        response = rollout_pb2_grpc.RolloutServiceStub(channel).Generate(request, timeout=60)
    assert len(response.results) == 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """rollout, grader and learner running; Prometheus scraping all three."""
    workdir = tmp_path_factory.mktemp("scrape")
    model = build_tiny_model(workdir / "model")
    rollout = ServiceProcess(
        "rft-rollout",
        ["--model", str(model), "--warmup-requests", "4", "--max-model-len", "256"],
        ready_timeout=240,
        wait_serving=False,
    )
    grader = ServiceProcess("rft-grader", ["--data-dir", str(workdir / "grader")])
    learner = ServiceProcess("rft-learner", ["--data-dir", str(workdir / "learner")])
    with rollout, grader, learner:
        grade_once(grader.address)
        rollout.wait_until_serving()
        generate_once(rollout.address)
        targets = {
            "rollout": f"127.0.0.1:{rollout.metrics_port}",
            "grader": f"127.0.0.1:{grader.metrics_port}",
            "learner": f"127.0.0.1:{learner.metrics_port}",
        }
        with Prometheus(workdir, targets) as prometheus:
            yield prometheus, {"rollout": rollout, "grader": grader, "learner": learner}


def test_prometheus_scrapes_one_metric_of_each_service(stack):
    prometheus, _ = stack
    for name, job in SCRAPE_JOBS.items():
        (up,) = prometheus.wait_for(f'up{{job="{job}"}} == 1')
        assert up["value"][1] == "1"
        (serving,) = prometheus.wait_for(f'rft_service_serving{{job="{job}", service="{name}"}} == 1')
        assert serving["metric"]["instance"].startswith("127.0.0.1:")
    # Each service's own metrics, through the same API.
    (grades,) = prometheus.wait_for('rft_grader_grades_total{job="rft-grader", outcome="ok"}')
    assert float(grades["value"][1]) >= 1 and grades["metric"]["type"] == "string_check"
    tokens = prometheus.wait_for('rft_rollout_generated_tokens_total{job="rft-rollout"} > 0')
    assert float(tokens[0]["value"][1]) >= 2, "two samples of at least one token"
    jobs = prometheus.wait_for('rft_learner_jobs{job="rft-learner"}')
    assert {series["metric"]["status"] for series in jobs} >= {"queued", "running", "succeeded"}
    # The interceptor counted the health checks the test harness made.
    checks = prometheus.wait_for('sum by (job) (rft_rpc_requests_total{method="Check", code="OK"})')
    assert {series["metric"]["job"] for series in checks} == set(SCRAPE_JOBS.values())


def test_alert_rules_evaluate_on_live_data(stack):
    prometheus, _ = stack
    deadline = time.monotonic() + 20
    while True:
        groups = prometheus.api("rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule["lastEvaluation"] != "0001-01-01T00:00:00Z" for rule in rules):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
    assert {rule["name"] for rule in rules} >= {"RFTTrainerStuck", "RFTGraderErrorRateHigh", "RFTRolloutUnavailable"}
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    # Every service is SERVING: once the rules have seen a scrape of each, no
    # unavailability alert stays pending (one may be pending from an evaluation that
    # ran before the first scrape).
    for name, job in SCRAPE_JOBS.items():
        prometheus.wait_for(f'rft_service_serving{{job="{job}", service="{name}"}} == 1')
    unwanted = {"RFTRolloutUnavailable", "RFTGraderUnavailable", "RFTTrainerStuck"}
    deadline = time.monotonic() + 15
    while True:
        active = {alert["labels"]["alertname"] for alert in prometheus.api("alerts")["data"]["alerts"]}
        if not active & unwanted:
            break
        assert time.monotonic() < deadline, f"alerts active while every service serves: {active}"
        time.sleep(0.5)


def test_every_dashboard_query_runs(stack):
    prometheus, _ = stack
    dashboard = json.loads((OBS / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m").replace('"$job_id"', '".*"')
            prometheus.query(expr)  # asserts status success (parses and evaluates)
    prometheus.wait_for('rate(rft_rpc_requests_total{method="Check"}[1m])')


def test_exposed_metric_types_match_the_names_we_query(stack):
    """What the dashboard and alerts assume (histogram or not) is what the services export."""
    _, services = stack
    exposed: dict[str, str] = {}
    for proc in services.values():
        for name, kind in re.findall(r"^# TYPE (rft_\w+) (\w+)$", proc.metrics(), re.M):
            exposed[re.sub(r"_total$", "", name) if kind == "counter" else name] = kind
    for name in KNOWN_METRICS:
        base = name.removesuffix("_total")
        if base in exposed:
            assert (exposed[base] == "histogram") == (name in HISTOGRAMS), f"{name} is a {exposed[base]}"
    missing = {n for n in KNOWN_METRICS if n.removesuffix("_total") not in exposed}
    print("metrics not yet exported by the running services:", sorted(missing))


def test_health_probe_script_checks_each_running_service(stack):
    """deploy/docker/rft_grpc_health.py in plaintext mode, with each service's health name."""
    _, services = stack
    names = {
        "rollout": "rft.rollout.v1.RolloutService",
        "grader": "rft.grader.v1.GraderService",
        "learner": "rft.learner.v1.FineTuningService",
    }
    for name, proc in services.items():
        for service in ("", names[name]):
            result = subprocess.run(
                [sys.executable, str(DEPLOY / "docker" / "rft_grpc_health.py"), "--port", str(proc.port)]
                + ["--service", service],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, (name, service, result.stderr)
