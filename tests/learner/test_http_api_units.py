"""The HTTP API's pure parts: API keys to tenants, OpenAI hyperparameters to the job proto,
metrics events, the model catalogue."""

from __future__ import annotations

import hashlib

import pytest
from rft.learner.v1 import fine_tuning_pb2 as ft
from rft_common.api_keys import ApiKeys
from rft_learner.http_api import convert, schemas
from rft_learner.http_api.errors import ApiError
from rft_learner.http_api.models import ModelCatalogue
from rft_learner.job_store import MetricsRecord


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_api_keys_map_hashed_keys_to_tenants(tmp_path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\nalice sha256:{digest('k-a')}\n\nbob sha256:{digest('k-b')}  # bob's\n")
    keys = ApiKeys.load(str(keys_file), service_token="operator")
    assert keys.required
    assert keys.tenant_for("k-a") == "alice" and keys.tenant_for("k-b") == "bob"
    assert keys.tenant_for("operator") == "default"
    assert keys.tenant_for("k-c") is None and keys.tenant_for(None) is None and keys.tenant_for("") is None
    assert "k-a" not in keys_file.read_text()  # only digests at rest


def test_a_keys_file_without_keys_is_an_error_not_an_open_door(tmp_path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# every key revoked\n")
    with pytest.raises(ValueError, match="no keys in it"):
        ApiKeys.load(str(keys_file))


def test_keys_are_reloaded_when_the_file_changes(tmp_path, monkeypatch) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"alice sha256:{digest('k-a')}\n")
    keys = ApiKeys.load(str(keys_file))
    monkeypatch.setattr(ApiKeys, "RELOAD_CHECK_SECONDS", 0.0)
    keys_file.write_text(f"bob sha256:{digest('k-b')}\n")  # alice revoked, bob added
    assert keys.tenant_for("k-a") is None and keys.tenant_for("k-b") == "bob"
    keys_file.write_text("garbage\n")  # a broken edit keeps the keys that work
    assert keys.tenant_for("k-b") == "bob"


def test_without_keys_everyone_is_default() -> None:
    keys = ApiKeys.load()
    assert not keys.required and keys.tenant_for(None) == "default" and keys.tenant_for("anything") == "default"


@pytest.mark.parametrize(
    "line",
    ["alice k-a", f"alice sha256:{digest('x')[:10]}", f"al ice sha256:{digest('x')}", f"-x sha256:{digest('x')}"],
)
def test_malformed_key_lines_name_their_line(tmp_path, line) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"bob sha256:{digest('b')}\n{line}\n")
    with pytest.raises(ValueError, match=r"keys:2: expected"):
        ApiKeys.load(str(keys_file))


def test_one_key_cannot_belong_to_two_tenants(tmp_path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"alice sha256:{digest('same')}\nbob sha256:{digest('same')}\n")
    with pytest.raises(ValueError, match="already belongs to tenant 'alice'"):
        ApiKeys.load(str(keys_file))


def job_body(**hyper) -> schemas.CreateJobBody:
    return schemas.CreateJobBody.model_validate(
        {
            "model": "tiny",
            "training_file": "file-1",
            "method": {
                "type": "reinforcement",
                "reinforcement": {"grader": {"type": "string_check"}, "hyperparameters": hyper},
            },
        }
    )


def test_openai_and_own_hyperparameters_fill_the_proto() -> None:
    body = job_body(
        n_epochs="auto", batch_size=8, learning_rate_multiplier=2, algorithm="DR_GRPO", dynamic_sampling=True,
        kl_coef=0, sft_answer_field="answer", reasoning_effort="high",
    )  # fmt: skip
    request = convert.create_job_request(body, "/models/tiny", "alice")
    hyper = request.method.reinforcement.hyperparameters
    assert not hyper.HasField("n_epochs")  # "auto": the learner chooses
    assert hyper.batch_size == 8 and hyper.learning_rate_multiplier == 2.0
    assert hyper.algorithm == ft.RL_ALGORITHM_DR_GRPO and hyper.dynamic_sampling is True
    assert hyper.HasField("kl_coef") and hyper.kl_coef == 0.0  # an explicit 0 is kept, not "unset"
    assert hyper.sft_answer_field == "answer"
    assert request.method.reinforcement.grader.tenant == "alice"  # never from the body
    assert request.method.reinforcement.grader.service_address == ""
    assert convert.hyperparameters_json(hyper)["algorithm"] == "dr_grpo"


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        ({"warp": 1}, "unknown hyperparameter"),
        ({"algorithm": "sgd"}, "one of grpo, dr_grpo"),
        ({"group_size": 2.5}, "an integer"),
        ({"group_size": True}, "an integer"),
        ({"kl_coef": "0.1"}, "a number"),
        ({"dynamic_sampling": 1}, "true or false"),
        ({"grader": {}}, "unknown hyperparameter"),  # a message field is not a hyperparameter
    ],
)
def test_bad_hyperparameters_name_the_field(hyper, message) -> None:
    with pytest.raises(ApiError) as refused:
        convert.create_job_request(job_body(**hyper), "/m", "alice")
    name = next(iter(hyper))
    assert refused.value.status == 400 and refused.value.param == f"method.reinforcement.hyperparameters.{name}"
    assert message in refused.value.message


def test_dpo_and_integrations_are_refused_clearly() -> None:
    body = schemas.CreateJobBody.model_validate({"model": "m", "training_file": "f", "method": {"type": "dpo"}})
    with pytest.raises(ApiError, match="dpo is not supported"):
        convert.create_job_request(body, "/m", "t")
    body = schemas.CreateJobBody.model_validate(
        {"model": "m", "training_file": "f", "integrations": [{"type": "wandb"}]}
    )
    with pytest.raises(ApiError, match="integrations"):
        convert.create_job_request(body, "/m", "t")


def test_metrics_events_carry_openai_fields() -> None:
    values = {"train_reward_mean": 0.5, "grader_errors": 2.0, "step_seconds": 1.5, "generate_seconds": 0.5, "kl": 0.1}
    event = convert.metrics_event("ftjob-abc", MetricsRecord(seq=3, step=4, time=100.0, values=values), 10)
    assert event["type"] == "metrics" and event["id"] == "ftevent-abc-m3"
    data = event["data"]
    assert (data["step"], data["total_steps"]) == (4, 10)
    assert data["scores"] == {"train_reward_mean": 0.5}
    assert data["timing"] == {"step": 1.5, "generate": 0.5}
    assert data["errors"] == {"grader_errors": 2.0}
    assert data["metrics"] == values
    assert event["message"] == "step 4/10: train_reward_mean=0.5"


def test_catalogue_entries_are_checked(tmp_path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    catalogue = ModelCatalogue.parse(f"base={model}, other={model}")
    assert set(catalogue.entries) == {"base", "other"}
    for spec, message in (
        (f"base={tmp_path}", "not a model directory"),
        (f"ft-x={model}", "not starting with 'ft'"),
        (str(model), "expected name=model-dir"),
        (f"a={model},a={model}", "appears twice"),
    ):
        with pytest.raises(ValueError, match=message):
            ModelCatalogue.parse(spec)


def test_the_operators_tenant_name_cannot_be_given_to_a_key(tmp_path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"default sha256:{digest('k')}\n")
    with pytest.raises(ValueError, match="operator's"):
        ApiKeys.load(str(keys_file))
