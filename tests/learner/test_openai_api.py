"""The OpenAI-compatible HTTP API driven by the official `openai` package, its base_url
pointed at a live learner (with live rollout and grader services): what a team's existing
RFT code does, unchanged but for base_url and the key."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request

import openai
import pytest
from jobs_client import HAS_SEVEN, learner_args, write_jsonl
from service_process import ServiceProcess
from tenant_keys import KEYS, write_keys_file

PYTHON_GRADER = {
    "type": "python",
    "name": "sevens",
    "source": "def grade(sample, item):\n    return 1.0 if item['digit'] in sample['output_text'] else 0.0\n",
}
HYPER = {
    "n_epochs": 1,
    "batch_size": 8,
    "eval_interval": "auto",
    "eval_samples": 2,
    "learning_rate_multiplier": 10.0,
    # Ours, beyond OpenAI's: accepted as extra fields of hyperparameters.
    "group_size": 4,
    "max_new_tokens": 8,
    "kl_coef": 0.0,
    "algorithm": "grpo",
}
FINISHED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def learner(rollout, grader_service, tiny_model, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("openai-api")
    keys_file = write_keys_file(workdir / "api-keys")
    args = learner_args(workdir / "learner", rollout, grader_service, checkpoint_interval=2)
    args += ["--api-keys-file", str(keys_file), "--model-catalogue", f"tiny={tiny_model}"]
    with ServiceProcess("rft-learner", args) as proc:
        yield proc


def client(learner, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=learner.base_url, api_key=KEYS[tenant], max_retries=0, timeout=900)


@pytest.fixture(scope="module")
def alice(learner) -> openai.OpenAI:
    return client(learner, "alice")


@pytest.fixture(scope="module")
def bob(learner) -> openai.OpenAI:
    return client(learner, "bob")


@pytest.fixture(scope="module")
def files(alice, tmp_path_factory):
    """Alice's training and validation files."""
    workdir = tmp_path_factory.mktemp("files")
    rows = [{"messages": [{"role": "user", "content": f"Write anything #{i}"}], "digit": "7"} for i in range(40)]
    train = write_jsonl(workdir / "train.jsonl", rows[:32])
    valid = write_jsonl(workdir / "valid.jsonl", rows[32:])
    with open(train, "rb") as t, open(valid, "rb") as v:
        return alice.files.create(file=t, purpose="fine-tune"), alice.files.create(file=v, purpose="fine-tune")


def wait_until(alice: openai.OpenAI, job_id: str, statuses: set[str], timeout: float = 900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = alice.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


def rft_method(grader: dict, **hyper) -> dict:
    return {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": {**HYPER, **hyper}}}


def test_files_upload_list_content_and_bad_lines(learner, alice, bob, files, tmp_path) -> None:
    train, valid = files
    assert train.object == "file" and train.purpose == "fine-tune" and train.filename == "train.jsonl"
    assert alice.files.retrieve(train.id).bytes == train.bytes
    listed = [f.id for f in alice.files.list()]
    assert train.id in listed and valid.id in listed
    assert json.loads(alice.files.content(train.id).text.splitlines()[0])["digit"] == "7"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n{"messages": []}\n')
    with pytest.raises(openai.BadRequestError) as refused:
        alice.files.create(file=bad.open("rb"), purpose="fine-tune")
    error = refused.value.body
    assert refused.value.status_code == 400 and error["param"] == "file" and error["code"] == "invalid_file"
    assert "line 2" in error["message"] and "line 3" in error["message"], error["message"]
    assert len(list(alice.files.list())) == 2  # the bad file stored nothing

    # An upload over --max-file-bytes is refused from its Content-Length, before the body.
    host, port = learner.base_url.removeprefix("http://").removesuffix("/v1").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/v1/files")
    connection.putheader("Authorization", f"Bearer {KEYS['alice']}")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(10**12))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and json.load(response)["error"]["code"] == "request_too_large"
    connection.close()

    # Another tenant sees none of it, and cannot read, delete or train on it.
    assert list(bob.files.list()) == []
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(train.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.content(train.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.delete(train.id)
    with pytest.raises(openai.BadRequestError) as other:
        bob.fine_tuning.jobs.create(model="tiny", training_file=train.id, method=rft_method(HAS_SEVEN))
    assert other.value.body["param"] == "training_file"


def raw_post(learner, path: str, chunks, key: str | None) -> tuple[int, dict]:
    """POST a chunked body (no Content-Length), as a client streaming a large upload does."""
    host, port = learner.base_url.removeprefix("http://").removesuffix("/v1").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request("POST", path, body=chunks, headers=headers, encode_chunked=True)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the whole body was sent
    response = connection.getresponse()
    body = json.load(response)
    connection.close()
    return response.status, body


def test_the_key_is_checked_before_the_body_and_bodies_are_bounded(learner) -> None:
    # A stranger's body is never read: 401, however large or malformed.
    status, body = raw_post(learner, "/v1/fine_tuning/jobs", iter([b"{not json"] * 4), None)
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    status, body = raw_post(learner, "/v1/fine_tuning/jobs", iter([b"{not json"]), KEYS["alice"])
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "invalid_json", None)
    # A chunked body (no Content-Length) is counted as it arrives and refused past 32 MiB.
    status, body = raw_post(learner, "/v1/fine_tuning/jobs", (b" " * (1 << 20) for _ in range(40)), KEYS["alice"])
    assert (status, body["error"]["code"]) == (413, "request_too_large"), body


def test_a_wrong_or_missing_key_is_refused(learner) -> None:
    stranger = openai.OpenAI(base_url=learner.base_url, api_key="sk-nobody", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.files.list()
    assert refused.value.body["code"] == "invalid_api_key"
    request = urllib.request.Request(learner.base_url + "/fine_tuning/jobs")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=10)
    assert missing.value.code == 401


def test_bad_job_requests_get_openai_errors(alice, files) -> None:
    train, valid = files
    create = alice.fine_tuning.jobs.create
    with pytest.raises(openai.NotFoundError) as unknown_model:
        create(model="/etc", training_file=train.id, method=rft_method(HAS_SEVEN))
    assert unknown_model.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad_file:
        create(model="tiny", training_file="file-nope", method=rft_method(HAS_SEVEN))
    assert bad_file.value.body["param"] == "training_file"
    with pytest.raises(openai.BadRequestError) as bad_grader:
        create(model="tiny", training_file=train.id, method=rft_method({"type": "string_check", "name": "x"}))
    assert "grader" in bad_grader.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad_hyper:
        create(model="tiny", training_file=train.id, method=rft_method(HAS_SEVEN, batch_size=-3))
    assert "batch_size" in bad_hyper.value.body["message"]
    with pytest.raises(openai.BadRequestError) as unknown_hyper:
        create(model="tiny", training_file=train.id, method=rft_method(HAS_SEVEN, warp_factor=9))
    assert unknown_hyper.value.body["param"] == "method.reinforcement.hyperparameters.warp_factor"
    with pytest.raises(openai.BadRequestError) as bad_choice:
        create(model="tiny", training_file=train.id, method=rft_method(HAS_SEVEN, algorithm="magic"))
    assert "grpo" in bad_choice.value.body["message"]  # the choices are listed
    with pytest.raises(openai.BadRequestError) as endpoint:
        create(model="tiny", training_file=train.id, method=rft_method({**HAS_SEVEN, "base_url": "http://evil/v1"}))
    assert endpoint.value.body["param"] == "method.reinforcement.grader.base_url"
    with pytest.raises(openai.BadRequestError) as misplaced:
        create(model="tiny", training_file=train.id, method=rft_method(HAS_SEVEN), hyperparameters={"n_epochs": 2})
    assert misplaced.value.body["param"] == "hyperparameters"
    assert list(alice.fine_tuning.jobs.list()) == []  # nothing was created


def test_graders_run_and_validate(alice) -> None:
    graders = alice.fine_tuning.alpha.graders
    hit = graders.run(grader=HAS_SEVEN, model_sample="it is 7", item={"digit": "7"})
    miss = graders.run(grader=HAS_SEVEN, model_sample="it is 8", item={"digit": "7"})
    assert (hit.reward, miss.reward) == (1.0, 0.0)
    assert hit.metadata.type == "string_check" and hit.metadata.execution_time >= 0
    assert not any(v for k, v in hit.metadata.errors.model_dump().items() if isinstance(v, bool))

    python = graders.run(grader=PYTHON_GRADER, model_sample="777", item={"digit": "7"})
    assert python.reward == 1.0
    raising = dict(PYTHON_GRADER, source="def grade(sample, item):\n    raise ValueError('boom')\n")
    failed = graders.run(grader=raising, model_sample="7", item={"digit": "7"})
    assert failed.metadata.errors.python_grader_runtime_error
    assert "boom" in failed.metadata.errors.python_grader_runtime_error_details

    assert graders.validate(grader=HAS_SEVEN).grader.type == "string_check"
    with pytest.raises(openai.BadRequestError) as invalid:
        graders.validate(grader={"type": "string_check", "name": "x", "operation": "eq"})
    assert invalid.value.body["code"] == "invalid_grader"


def test_rft_jobs_run_to_success_with_events_checkpoints_and_pause(alice, bob, files) -> None:
    train, valid = files
    first = alice.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        validation_file=valid.id,
        suffix="sevens",
        seed=7,
        metadata={"team": "search"},
        method=rft_method(HAS_SEVEN, n_epochs=3),  # 12 steps: time to pause it mid-run
    )
    assert first.object == "fine_tuning.job" and first.model == "tiny" and first.metadata == {"team": "search"}
    assert first.method.reinforcement.hyperparameters.batch_size == 8
    assert first.method.type == "reinforcement"
    # Queued behind the first, the second can be paused and resumed at once.
    second = alice.fine_tuning.jobs.create(
        model="tiny", training_file=train.id, validation_file=valid.id, method=rft_method(PYTHON_GRADER)
    )
    assert alice.fine_tuning.jobs.pause(second.id).status == "paused"
    with pytest.raises(openai.ConflictError):
        alice.fine_tuning.jobs.pause(second.id)
    assert alice.fine_tuning.jobs.resume(second.id).status == "queued"
    with pytest.raises(openai.NotFoundError):
        bob.fine_tuning.jobs.cancel(second.id)
    with pytest.raises(openai.ConflictError) as in_use:
        alice.files.delete(valid.id)
    assert in_use.value.body["code"] == "file_in_use"

    # Pausing the running job checkpoints it; resuming continues from there to success.
    deadline = time.monotonic() + 600
    while (running := alice.fine_tuning.jobs.retrieve(first.id)).trained_steps < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running.status == "running" and running.trained_steps < running.total_steps
    alice.fine_tuning.jobs.pause(first.id)
    paused = wait_until(alice, first.id, {"paused", *FINISHED})
    assert paused.status == "paused" and paused.trained_steps < paused.total_steps
    assert alice.fine_tuning.jobs.resume(first.id).status == "queued"
    done = wait_until(alice, first.id, FINISHED)
    assert done.status == "succeeded", done.error
    assert any("pause" in e.message for e in alice.fine_tuning.jobs.list_events(first.id, limit=1000))
    assert done.fine_tuned_model == f"ft:tiny:alice:sevens:{first.id}"
    assert done.finished_at >= done.created_at

    events = list(alice.fine_tuning.jobs.list_events(first.id, limit=1000))
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all(e.object == "fine_tuning.job.event" for e in events)
    steps = {e.data["step"] for e in metrics}
    assert steps >= set(range(1, done.total_steps + 1)), steps
    trained = next(e for e in metrics if "train_reward_mean" in e.data["scores"])
    assert trained.data["total_steps"] == done.total_steps and "step" in trained.data["timing"]
    assert any("valid_reward_mean" in e.data["scores"] for e in metrics)
    assert any(e.type == "message" and "job succeeded" in e.message for e in events)
    # Pages of 3 walk the same list, newest first.
    page = alice.fine_tuning.jobs.list_events(first.id, limit=3)
    assert len(page.data) == 3 and page.has_more
    walked = [e.id for e in alice.fine_tuning.jobs.list_events(first.id, limit=3)]  # auto-paginates
    assert walked == [e.id for e in events]

    checkpoints = list(alice.fine_tuning.jobs.checkpoints.list(first.id))
    assert checkpoints and checkpoints[0].step_number >= checkpoints[-1].step_number
    assert checkpoints[0].fine_tuned_model_checkpoint.startswith(done.fine_tuned_model + ":ckpt-step-")
    assert alice.models.retrieve(checkpoints[-1].fine_tuned_model_checkpoint).owned_by == "alice"
    with pytest.raises(openai.NotFoundError):
        bob.models.retrieve(checkpoints[-1].fine_tuned_model_checkpoint)

    resumed = wait_until(alice, second.id, FINISHED)
    assert resumed.status == "succeeded", resumed.error
    listed = alice.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in listed.data] == [second.id] and listed.has_more
    assert [j.id for j in alice.fine_tuning.jobs.list(metadata={"team": "search"})] == [first.id]
    assert list(bob.fine_tuning.jobs.list()) == []

    models = [m.id for m in alice.models.list()]
    assert models[0] == "tiny" and done.fine_tuned_model in models
    assert done.fine_tuned_model not in [m.id for m in bob.models.list()]


def test_supervised_job_and_cancel(alice, files) -> None:
    train, valid = files
    sft = alice.fine_tuning.jobs.create(
        model="tiny",
        training_file=train.id,
        method={
            "type": "supervised",
            "supervised": {"answer_field": "digit", "hyperparameters": {"n_epochs": 1, "batch_size": 8}},
        },
    )
    assert sft.method.type == "supervised" and sft.hyperparameters.batch_size == 8
    queued = alice.fine_tuning.jobs.create(model="tiny", training_file=train.id, method=rft_method(HAS_SEVEN))
    assert alice.fine_tuning.jobs.cancel(queued.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        alice.fine_tuning.jobs.cancel(queued.id)
    done = wait_until(alice, sft.id, FINISHED)
    assert done.status == "succeeded", done.error
    assert done.trained_steps == done.total_steps == 4  # 32 examples / 8 per step, one epoch


def test_chat_completions_on_the_fine_tuned_model(alice, bob) -> None:
    job = next(j for j in alice.fine_tuning.jobs.list() if j.user_provided_suffix == "sevens")
    messages = [{"role": "user", "content": "Write anything #1"}]
    reply = alice.chat.completions.create(model=job.fine_tuned_model, messages=messages, max_tokens=8, seed=1)
    assert reply.model == job.fine_tuned_model and reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens >= 1
    stream = alice.chat.completions.create(
        model=job.fine_tuned_model, messages=messages, max_tokens=8, stream=True, temperature=0
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    greedy = alice.chat.completions.create(model=job.fine_tuned_model, messages=messages, max_tokens=8, temperature=0)
    assert "".join(pieces) == greedy.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        bob.chat.completions.create(model=job.fine_tuned_model, messages=messages, max_tokens=4)


def test_openapi_document_covers_every_route(learner) -> None:
    with urllib.request.urlopen(learner.base_url.removesuffix("/v1") + "/openapi.json", timeout=10) as response:
        document = json.load(response)
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    expected = {
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/{file_id}"),
        ("DELETE", "/v1/files/{file_id}"),
        ("GET", "/v1/files/{file_id}/content"),
        ("POST", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"),
        ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"),
        ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/pause"),
        ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/resume"),
        ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"),
        ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"),
        ("POST", "/v1/fine_tuning/alpha/graders/run"),
        ("POST", "/v1/fine_tuning/alpha/graders/validate"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{model}"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        # The console's extensions (d9fc08d).
        ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/metrics"),
        ("GET", "/v1/fine_tuning/hyperparameters"),
        ("POST", "/v1/fine_tuning/hyperparameters/validate"),
        # Evaluations (OpenAI's Evals API, a subset) and saved graders (ours): http_api/evals.py.
        ("POST", "/v1/evals"),
        ("GET", "/v1/evals"),
        ("GET", "/v1/evals/{eval_id}"),
        ("POST", "/v1/evals/{eval_id}"),
        ("DELETE", "/v1/evals/{eval_id}"),
        ("POST", "/v1/evals/{eval_id}/runs"),
        ("GET", "/v1/evals/{eval_id}/runs"),
        ("GET", "/v1/evals/{eval_id}/runs/{run_id}"),
        ("POST", "/v1/evals/{eval_id}/runs/{run_id}"),
        ("POST", "/v1/evals/{eval_id}/runs/{run_id}/cancel"),
        ("DELETE", "/v1/evals/{eval_id}/runs/{run_id}"),
        ("GET", "/v1/evals/{eval_id}/runs/{run_id}/output_items"),
        ("GET", "/v1/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}"),
        ("POST", "/v1/graders"),
        ("GET", "/v1/graders"),
        ("GET", "/v1/graders/{grader_id}"),
        ("DELETE", "/v1/graders/{grader_id}"),
    }
    assert documented == expected
    assert "HTTPBearer" in document["components"]["securitySchemes"]
