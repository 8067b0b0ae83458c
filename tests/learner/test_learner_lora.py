"""A LoRA reinforcement job end to end: the learner trains only adapters on the demo
model, the rollout (vLLM with LoRA) gets the base once and then adapters alone, the
reward rises, a pause / resume continues exactly, and the export is the merged model
plus the adapter."""

from __future__ import annotations

import json
import pathlib

import grpc
import pytest
import requests
import torch
from jobs_client import (
    jobs_stub,
    learner_args,
    metrics_by_step,
    reinforcement_request,
    upload,
    wait_for,
    wait_for_steps,
    write_jsonl,
)
from prometheus_client.parser import text_string_to_metric_families
from rft.learner.v1 import fine_tuning_pb2 as ft
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_learner.trainer.policy import load_model
from service_process import ServiceProcess

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo"
DONE = {ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED}
RANK = 8
# The demo model answers additions; rewarding answers that contain a 7 is something a
# rank-8 adapter learns within a few steps.
SPEC = {
    "type": "string_check",
    "name": "has_seven",
    "input": "{{sample.output_text}}",
    "reference": "7",
    "operation": "like",
}
HYPER = dict(
    batch_size=8,
    group_size=8,
    max_new_tokens=6,
    learning_rate_multiplier=10.0,
    kl_coef=0.0,
    eval_interval=0,
    eval_samples=2,
    lora_rank=RANK,
)


def rows(path: pathlib.Path, n: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[:n]]


def adapter_bytes(rank: int, model_dir: pathlib.Path) -> int:
    """float32 bytes of a rank-`rank` adapter on every linear layer of the blocks."""
    config = json.loads((model_dir / "config.json").read_text())
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]  # (out, in): q k v o gate up down
    return layers * sum(4 * rank * (out + inp) for out, inp in shapes)


def pushed_bytes(rollout) -> float:
    """Tensor bytes of the weight updates the rollout has applied so far."""
    text = requests.get(rollout.proc.metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "rft_rollout_weight_update_bytes":
            return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    return 0.0


def test_a_lora_job_sends_adapters_raises_the_reward_and_resumes_exactly(lora_rollout, grader_service, tmp_path):
    model = lora_rollout.model_dir
    args = learner_args(tmp_path / "learner", lora_rollout, grader_service, checkpoint_interval=100)
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        stub = jobs_stub(channel)
        train = upload(channel, write_jsonl(tmp_path / "train.jsonl", rows(DEMO / "train.jsonl", 96)))
        valid = upload(channel, write_jsonl(tmp_path / "valid.jsonl", rows(DEMO / "valid.jsonl", 16)))

        # A rank the rollout cannot take is refused up front, naming the fix.
        too_big = reinforcement_request(str(model), train.id, valid.id, SPEC, **{**HYPER, "lora_rank": 16})
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateJob(too_big, timeout=120)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "lora_rank" in refused.value.details() and "--max-lora-rank" in refused.value.details()

        before = pushed_bytes(lora_rollout)
        request = reinforcement_request(str(model), train.id, valid.id, SPEC, seed=5, n_epochs=1, **HYPER)
        straight = stub.CreateJob(request, timeout=120).job.id  # 12 steps
        job = wait_for(channel, straight, DONE, timeout=900)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        steps = metrics_by_step(channel, straight)
        rewards = [steps[s]["train_reward_mean"] for s in range(1, 13)]
        assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.1, f"training reward did not rise: {rewards}"

        # The rollout got the base once, then 13 adapters (the start and every step), nothing more.
        base = sum(t.numel() * t.element_size() for t in load_model(model).state_dict().values())
        adapter = adapter_bytes(RANK, model)
        assert pushed_bytes(lora_rollout) - before == base + 13 * adapter
        info = lora_rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=10)
        assert info.lora.rank == RANK and info.lora.alpha == 2 * RANK

        # The export serves as a plain model: adapted layers moved, frozen ones are the base's.
        exported = pathlib.Path(job.fine_tuned_model)
        assert (exported / "adapter" / "adapter_model.safetensors").is_file()
        tuned, original = load_model(exported).state_dict(), load_model(model).state_dict()
        assert (tuned["model.embed_tokens.weight"] == original["model.embed_tokens.weight"]).all()
        assert (tuned["model.norm.weight"] == original["model.norm.weight"]).all()
        assert not (tuned["model.layers.0.self_attn.q_proj.weight"] == original[
            "model.layers.0.self_attn.q_proj.weight"]).all()  # fmt: skip

        # Pause mid-job and resume: the later steps match the uninterrupted run.
        paused = stub.CreateJob(request, timeout=120).job.id
        wait_for_steps(channel, paused, 4)
        stub.PauseJob(ft.PauseJobRequest(job_id=paused), timeout=10)
        job = wait_for(channel, paused, {ft.JOB_STATUS_PAUSED, *DONE})
        assert job.status == ft.JOB_STATUS_PAUSED, job.error
        pause_step = job.trained_steps
        assert pause_step < job.total_steps
        stub.ResumeJob(ft.ResumeJobRequest(job_id=paused), timeout=10)
        assert wait_for(channel, paused, DONE, timeout=900).status == ft.JOB_STATUS_SUCCEEDED
        resumed = metrics_by_step(channel, paused)
        for step in range(pause_step + 1, 13):
            for name in ("train_reward_mean", "loss", "response_length_mean"):
                assert resumed[step][name] == steps[step][name], (step, name)


def test_lora_supervised_job_and_lora_rl_after_an_sft_warm_up(lora_rollout, grader_service, tmp_path):
    model = lora_rollout.model_dir
    data_dir = tmp_path / "learner"
    with ServiceProcess("rft-learner", learner_args(data_dir, lora_rollout, grader_service)) as learner:
        with learner.channel() as channel:
            stub = jobs_stub(channel)
            train = upload(channel, write_jsonl(tmp_path / "train.jsonl", rows(DEMO / "train.jsonl", 32)))
            supervised = ft.CreateJobRequest(
                model=str(model),
                training_file=train.id,
                method=ft.Method(
                    supervised=ft.SupervisedMethod(
                        answer_field="answer",
                        hyperparameters=ft.SupervisedHyperparameters(n_epochs=1, batch_size=8, lora_rank=4),
                    )
                ),
            )
            job = wait_for(channel, stub.CreateJob(supervised, timeout=60).job.id, DONE)
            assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
            adapter_config = json.loads(
                (pathlib.Path(job.fine_tuned_model) / "adapter" / "adapter_config.json").read_text()
            )
            assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8

            # ReFT with LoRA: the warm-up is merged into the base, which becomes the KL
            # reference of a fresh adapter, so the first RL step starts at KL 0.
            request = reinforcement_request(
                str(model), train.id, "", SPEC, n_epochs=1, sft_warmup_epochs=1, sft_answer_field="answer",
                **{**HYPER, "kl_coef": 0.05},
            )  # fmt: skip
            job_id = stub.CreateJob(request, timeout=120).job.id
            job = wait_for(channel, job_id, DONE, timeout=900)
            assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
            steps = metrics_by_step(channel, job_id)
            assert job.total_steps == 8 and "sft_loss" in steps[4] and "train_reward_mean" in steps[5]
            assert steps[5]["kl"] < 1e-6 < steps[8]["kl"]
            assert (data_dir / "jobs" / job_id / "reference" / "model.safetensors").is_file()


def test_a_restarted_rollout_gets_the_lora_base_and_adapter_again(grader_service, tmp_path):
    """After an SFT warm-up the base is no longer the model the rollout starts from: a
    restarted replica must get that base and the current adapter, not the adapter alone."""
    model = REPO / "models" / "demo-base"
    rollout_args = ["--model", str(model), "--max-lora-rank", str(RANK), "--warmup-requests", "4"]
    rollout = ServiceProcess("rft-rollout", rollout_args, ready_timeout=300).__enter__()
    try:
        args = learner_args(tmp_path / "learner", rollout, grader_service) + ["--remote-patience-seconds", "300"]
        with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
            train = upload(channel, write_jsonl(tmp_path / "train.jsonl", rows(DEMO / "train.jsonl", 32)))
            request = reinforcement_request(
                str(model), train.id, "", SPEC, n_epochs=3, sft_warmup_epochs=1, sft_answer_field="answer", **HYPER
            )
            job_id = jobs_stub(channel).CreateJob(request, timeout=120).job.id  # 4 SFT + 12 RL steps
            wait_for_steps(channel, job_id, 6)
            rollout.kill()
            rollout = rollout.restarted().__enter__()
            job = wait_for(channel, job_id, DONE, timeout=900)
            assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error

        # The restarted replica serves exactly the exported policy: warmed-up base + adapter.
        exported = load_model(job.fine_tuned_model)
        with rollout.channel() as rollout_channel:
            stub = rollout_pb2_grpc.RolloutServiceStub(rollout_channel)
            assert stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30).lora.rank == RANK
            response = stub.Generate(
                rollout_pb2.GenerateRequest(
                    prompts=[rollout_pb2.Prompt(text=f"What is {a} + {b}?") for a, b in ((12, 30), (45, 47))],
                    sampling=rollout_pb2.SamplingParams(temperature=0.0, max_tokens=8),
                ),
                timeout=60,
            )
        for result in response.results:
            prompt, sample = list(result.prompt_token_ids), result.samples[0]
            ids = torch.tensor([prompt + list(sample.token_ids)])
            with torch.no_grad():
                logprobs = torch.log_softmax(exported(input_ids=ids).logits[0, len(prompt) - 1 : -1], dim=-1)
            expected = logprobs[torch.arange(len(sample.token_ids)), torch.tensor(list(sample.token_ids))]
            torch.testing.assert_close(torch.tensor(list(sample.logprobs)), expected, atol=1e-3, rtol=0)
    finally:
        rollout.stop()
