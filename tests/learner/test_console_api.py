"""What the web console needs from the HTTP API, route by route on the real FastAPI app:
its files served without a key (and with a CSP), every bad line of a rejected file with
its field, the hyperparameter catalogue and the inline check the New job form uses."""

from __future__ import annotations

import hashlib
import types

import pytest
from fastapi.testclient import TestClient
from rft.learner.v1 import fine_tuning_pb2
from rft_common.api_keys import ApiKeys
from rft_learner import hparams
from rft_learner.datasets import DatasetReport, LineError
from rft_learner.db import Database
from rft_learner.http_api import app as app_module
from rft_learner.http_api import convert, hyperparameters
from rft_learner.http_api.app import ApiContext, build_app
from rft_learner.job_store import JobStore

KEY = "sk-console-test"


@pytest.fixture
def keys(tmp_path) -> ApiKeys:
    path = tmp_path / "keys"
    path.write_text(f"alice sha256:{hashlib.sha256(KEY.encode()).hexdigest()}\n")
    return ApiKeys.load(str(path))


class Untouched:
    """Stands in for the services these routes never call: any use fails the test."""

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            pytest.fail(f"the route called {name}")

        return call


@pytest.fixture
def client(tmp_path):
    def make(keys: ApiKeys, console_dir: str) -> TestClient:
        jobs = Untouched()
        jobs.store = types.SimpleNamespace(db=Database(tmp_path / "learner.db"))  # the evals routes keep theirs here
        context = ApiContext(
            jobs=jobs, files=Untouched(), keys=keys, names=Untouched(), grader=Untouched(), inference=Untouched()
        )
        http = TestClient(build_app(context, 1 << 20, console_dir), follow_redirects=False)
        http.app_state_jobs = jobs  # a test may give the routes a real job store
        return http

    return make


@pytest.fixture
def built(tmp_path):
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><div id=app></div>")
    (dist / "assets" / "index-abc123.js").write_text("console.log(1)")
    return dist


def test_console_files_need_no_key_but_the_api_does(client, keys, built) -> None:
    http = client(keys, str(built))
    assert http.get("/").headers["location"] == "/console/"
    page = http.get("/console/")
    assert page.status_code == 200 and "id=app" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    asset = http.get("/console/assets/index-abc123.js")
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    escape = http.get("/console/%2e%2e/%2e%2e/%2e%2e/etc/passwd")
    assert escape.status_code == 404 and "root:" not in escape.text
    assert http.get("/v1/fine_tuning/hyperparameters").status_code == 401
    assert http.get("/v1/fine_tuning/hyperparameters", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_an_unbuilt_console_says_how_to_build_it(client, keys, tmp_path) -> None:
    page = client(keys, str(tmp_path / "missing")).get("/console/")
    assert page.status_code == 503 and "make install" in page.text


def test_no_console_when_turned_off(client, keys) -> None:
    http = client(keys, "none")
    assert http.get("/console/").status_code == 404 and http.get("/").status_code == 404


@pytest.mark.parametrize(
    ("reason", "field"),
    [
        ("missing field 'messages'", "messages"),
        ("'messages' must be a non-empty list", "messages"),
        ("messages[0] must be an object with 'role' and 'content'", "messages[0]"),
        ("messages[1].role is 'bot'; expected one of system, developer, user, assistant", "messages[1].role"),
        ("messages[0] is missing 'content'", "messages[0]"),
        (
            'messages[2].content must be a string or a list of {"type": "text", "text": ...} parts',
            "messages[2].content",
        ),
        ("the last message must be from the user, got role 'assistant'", "messages"),
        ("not valid JSON: Expecting value: line 1 column 1 (char 0)", ""),
        ("expected a JSON object, got list", ""),
        ("line is 9999999 bytes; the limit is 1048576", ""),
    ],
)
def test_each_bad_line_names_its_field(reason, field) -> None:
    assert convert.line_field(reason) == field


def test_every_bad_line_is_reported_up_to_the_cap(monkeypatch) -> None:
    report = DatasetReport(examples=0, errors=[LineError(n, "missing field 'messages'") for n in range(1, 26)])
    problems = convert.line_problems(report)
    assert len(problems["lines"]) == 25 and problems["lines_left_out"] == 0  # the message shows only 20
    assert problems["lines"][24] == {"line": 25, "field": "messages", "reason": "missing field 'messages'"}
    monkeypatch.setattr(convert, "MAX_LINE_PROBLEMS", 10)
    assert convert.line_problems(report)["lines_left_out"] == 15


def test_the_catalogue_describes_every_hyperparameter_a_job_accepts() -> None:
    catalogue = hyperparameters.catalogue()
    for kind, message, model in (
        ("reinforcement", fine_tuning_pb2.ReinforcementHyperparameters, hparams.ReinforcementParams),
        ("supervised", fine_tuning_pb2.SupervisedHyperparameters, hparams.SupervisedParams),
    ):
        described = {f["name"]: f for f in catalogue[kind]}
        accepted = {f.name for f in message.DESCRIPTOR.fields if f.message_type is None}
        assert set(described) == accepted, kind
        for name, entry in described.items():
            assert entry["description"], f"{kind}.{name} has no documentation"
            default = model.model_fields[name].default
            assert entry["default"] == default
    rl = {f["name"]: f for f in catalogue["reinforcement"]}
    assert (rl["group_size"]["minimum"], rl["group_size"]["maximum"], rl["group_size"]["default"]) == (1, 256, 8)
    assert rl["learning_rate_multiplier"]["exclusive_minimum"] == 0 and rl["learning_rate_multiplier"]["auto"]
    assert rl["algorithm"]["choices"] == list(hparams.ALGORITHM_DEFAULTS)
    assert rl["loss_aggregation"]["choices"] == ["token_mean", "sequence_mean", "constant"]
    assert (rl["tool_servers"]["type"], rl["tool_servers"]["default"]) == ("array", [])
    assert [f["name"] for f in catalogue["reinforcement"][:3]] == ["n_epochs", "batch_size", "learning_rate_multiplier"]


def test_inline_check_gives_the_job_creation_message(client, keys) -> None:
    http = client(keys, "none")
    auth = {"Authorization": f"Bearer {KEY}"}
    grader = {"type": "string_check", "name": "x", "input": "a", "reference": "a", "operation": "eq"}

    def check(hyper: dict, kind: str = "reinforcement"):
        method = {"type": kind, kind: {"hyperparameters": hyper}}
        if kind == "reinforcement":
            method[kind]["grader"] = grader
        else:
            method[kind]["answer_field"] = "answer"
        return http.post("/v1/fine_tuning/hyperparameters/validate", json={"method": method}, headers=auth)

    ok = check({"group_size": 4, "n_epochs": "auto", "algorithm": "dapo"})
    assert ok.status_code == 200
    assert ok.json()["resolved"]["group_size"] == 4 and ok.json()["resolved"]["kl_coef"] == 0.0  # dapo's default
    bad = check({"group_size": 0}).json()["error"]
    assert bad["param"] == "method.reinforcement.hyperparameters.group_size"
    assert (
        bad["message"] == "method.reinforcement.hyperparameters.group_size: Input should be greater than or equal to 1"
    )
    typed = check({"algorithm": "sgd"}).json()["error"]
    assert typed["param"] == "method.reinforcement.hyperparameters.algorithm" and "grpo" in typed["message"]
    unknown = check({"gruop_size": 4}).json()["error"]
    assert "unknown hyperparameter" in unknown["message"] and "group_size" in unknown["message"]
    assert (
        check({"batch_size": 0}, "supervised").json()["error"]["param"]
        == "method.supervised.hyperparameters.batch_size"
    )
    episodes = check({"max_turns": 3, "tool_servers": ["calc"]})
    assert episodes.status_code == 200 and episodes.json()["resolved"]["tool_servers"] == ["calc"]
    listless = check({"tool_servers": "calc"}).json()["error"]
    assert listless["param"] == "method.reinforcement.hyperparameters.tool_servers"
    assert "list of strings" in listless["message"]


def test_metrics_seqs_are_never_handed_out_twice(tmp_path) -> None:
    """A console polling with after_seq sees the steps a resumed job records again."""
    store = JobStore(Database(tmp_path / "learner.db"))
    job = store.create(fine_tuning_pb2.CreateJobRequest(model="m", training_file="f"), seed=0)
    store.truncate_metrics_after(job.id, -1)  # a job starting from scratch has nothing to truncate
    for step in range(1, 6):
        store.add_metrics(job.id, step, {"train_reward_mean": 0.1 * step})
    seen = store.metrics(job.id)[-1].seq
    store.truncate_metrics_after(job.id, 3)  # the job resumes from its step-3 checkpoint
    store.add_metrics(job.id, 4, {"train_reward_mean": 0.9})
    again = store.metrics(job.id, after_seq=seen)
    assert [(r.step, r.values["train_reward_mean"]) for r in again] == [(4, 0.9)]
    assert again[0].seq > seen


def test_the_metrics_path_pages_oldest_first(client, keys, tmp_path) -> None:
    http = client(keys, "none")
    store = JobStore(Database(tmp_path / "metrics.db"))
    job = store.create(fine_tuning_pb2.CreateJobRequest(model="m", training_file="f"), seed=0, owner="alice")
    for step in range(1, 8):
        store.add_metrics(job.id, step, {"train_reward_mean": step / 10})
    jobs = http.app_state_jobs
    jobs.store = store
    jobs.get = store.get
    auth = {"Authorization": f"Bearer {KEY}"}
    steps, after, pages = [], 0, 0
    while True:
        page = http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics?after_seq={after}&limit=3", headers=auth).json()
        steps += [record["step"] for record in page["data"]]
        pages += 1
        after = page["last_seq"]
        if not page["has_more"]:
            break
    assert steps == list(range(1, 8)) and pages == 3
    over = http.get(f"/v1/fine_tuning/jobs/{job.id}/metrics?limit={app_module.METRICS_PAGE + 1}", headers=auth)
    assert over.status_code == 400 and over.json()["error"]["param"] == "limit"
    assert http.get("/v1/fine_tuning/jobs/ftjob-nope/metrics", headers=auth).status_code == 404
