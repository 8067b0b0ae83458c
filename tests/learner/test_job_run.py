"""JobRun's checkpoint selection and export, on a real tiny model and real checkpoint
directories (no services): the best evaluated checkpoint is exported, or the last."""

from __future__ import annotations

import asyncio
import math
import pathlib

import pytest
import safetensors.torch
import torch
from rft.learner.v1 import fine_tuning_pb2 as ft
from rft_learner.hparams import ReinforcementParams
from rft_learner.trainer import checkpoint as ckpt
from rft_learner.trainer.loop import JobRun, TrainerSettings, check_optimizer_layout
from rft_learner.trainer.policy import load_model, load_tokenizer
from rft_learner.trainer.ranks import Updater
from rft_learner.trainer.rl_step import JobFailure


class Control:
    job_id = "ftjob-test"

    def __init__(self) -> None:
        self.progress_fields: dict = {}
        self.events: list[str] = []

    def event(self, level: int, message: str) -> None:
        self.events.append(message)

    def progress(self, **fields) -> None:
        self.progress_fields.update(fields)

    def checkpointed(self, step: int, path: pathlib.Path, metrics: dict) -> None:
        pass


@pytest.fixture
def job(tiny_model, tmp_path) -> JobRun:
    settings = TrainerSettings(data_dir=tmp_path, rollout_addresses="", grader_address="", checkpoint_interval=10)
    request = ft.CreateJobRequest(model=str(tiny_model), method=ft.Method(reinforcement=ft.ReinforcementMethod()))
    run = JobRun(request, 1, Control(), settings)
    run.tokenizer = load_tokenizer(tiny_model)
    run.model = load_model(tiny_model)
    run.updater = Updater(1)
    run.optimizer = run.updater.begin_phase(str(tiny_model), run.model, 1e-3)
    return run


def checkpoint_at(run: JobRun, step: int, valid_reward: float, shift: float) -> dict[str, torch.Tensor]:
    """Evaluate (as if) at `step`, with the weights moved by `shift`, and checkpoint."""
    with torch.no_grad():
        for parameter in run.model.parameters():
            parameter.add_(shift)
    run._consider_best(step, {"valid_reward_mean": valid_reward})
    asyncio.run(run._save(step, {"phase": "rl"}, run.optimizer))
    return {k: v.clone() for k, v in run.model.state_dict().items()}


def exported_weights(path: str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(f"{path}/model.safetensors")


def test_the_best_evaluated_checkpoint_is_exported_not_the_last(job: JobRun) -> None:
    best = checkpoint_at(job, 2, 0.6, 0.01)
    checkpoint_at(job, 4, 0.4, 0.01)
    last = checkpoint_at(job, 6, float("nan"), 0.01)  # every validation sample failed grading
    assert job.best["step"] == 2 and job.evals_since_best == 2
    out = asyncio.run(job._export(ReinforcementParams(), 6))
    exported = exported_weights(out)
    assert all(exported[k].equal(best[k]) for k in exported)
    assert not all(exported[k].equal(last[k]) for k in exported)
    assert job.ctl.progress_fields["exported_step"] == 2
    assert job.ctl.progress_fields["final_metrics"] == {"valid_reward_mean": 0.6}


def test_export_last_takes_the_final_weights(job: JobRun) -> None:
    checkpoint_at(job, 2, 0.6, 0.01)
    last = checkpoint_at(job, 4, 0.4, 0.01)
    job.latest_eval = {"valid_reward_mean": 0.4}
    out = asyncio.run(job._export(ReinforcementParams(export_checkpoint="last"), 4))
    exported = exported_weights(out)
    assert all(exported[k].equal(last[k]) for k in exported)
    assert job.ctl.progress_fields["exported_step"] == 4


def test_a_nan_evaluation_never_becomes_the_best(job: JobRun) -> None:
    job._consider_best(1, {"valid_reward_mean": math.nan})
    assert job.best is None
    job._consider_best(2, {"valid_reward_mean": 0.0})
    assert job.best["step"] == 2


def test_a_checkpoint_records_its_optimizer_layout_and_a_mismatched_resume_says_which_flag(job: JobRun) -> None:
    checkpoint_at(job, 3, 0.5, 0.0)
    state = ckpt.load_trainer_state(ckpt.checkpoint_dir(job.ckpt_root, 3))
    assert state["optimizer_layout"] == "replicated"
    check_optimizer_layout(state, sharded=False)  # same learner: resumes
    with pytest.raises(JobFailure, match="holds replicated optimizer state .* --trainer-sharding none"):
        check_optimizer_layout(state, sharded=True)
    with pytest.raises(JobFailure, match="--trainer-sharding fsdp and --trainer-ranks > 1"):
        check_optimizer_layout({**state, "optimizer_layout": "fsdp"}, sharded=False)
    check_optimizer_layout({k: v for k, v in state.items() if k != "optimizer_layout"}, sharded=False)  # older
