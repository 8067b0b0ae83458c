"""--device and --precision: what resolves where, and RL updates in bf16 and bf16-mixed
on CPU (torch runs bf16 there too) that learn like fp32 and keep their dtypes."""

from __future__ import annotations

import pytest
import torch
from rft_learner.hparams import ReinforcementParams
from rft_learner.job_validation import served_dtype_problem
from rft_learner.trainer.devices import Placement, resolve_placement
from rft_learner.trainer.policy import ValueHead, build_sequence_batch, forward, load_model
from rft_learner.trainer.ranks import Updater
from rft_learner.trainer.updates import Group
from test_updates import BAD, GOOD, completion_logprob

PROMPT = [1, 60, 61, 62, 2, 1, 70]


def test_auto_resolves_to_cpu_fp32_without_a_gpu_and_cuda_is_refused_with_the_flag_named() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert resolve_placement("auto", "auto") == Placement(torch.device("cpu"), "fp32")
    assert resolve_placement("cpu", "bf16-mixed").precision == "bf16-mixed"
    with pytest.raises(ValueError, match="--device cuda:1: this machine has no CUDA GPU"):
        resolve_placement("cuda:1", "auto")
    with pytest.raises(ValueError, match="--precision fp8"):
        resolve_placement("cpu", "fp8")


@pytest.mark.parametrize("precision", ["bf16", "bf16-mixed"])
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_rl_updates_in_bf16_learn_and_keep_their_dtypes(tiny_model, precision: str, algorithm: str) -> None:
    torch.manual_seed(0)
    placement = Placement(torch.device("cpu"), precision)
    model = load_model(tiny_model, placement)
    reference = load_model(tiny_model, placement, frozen=True).requires_grad_(False)
    assert next(model.parameters()).dtype == placement.weights_dtype
    assert next(reference.parameters()).dtype == torch.bfloat16
    value_head = None
    if algorithm == "ppo":
        value_head = ValueHead(model.config.hidden_size).to(dtype=placement.weights_dtype)
    trainable = list(model.parameters()) + (list(value_head.parameters()) if value_head else [])
    # bf16 weights cannot take steps below their resolution: a larger rate, as documented.
    optimizer = torch.optim.AdamW(trainable, lr=3e-3 if precision == "bf16-mixed" else 1e-2)
    updater = Updater(1, micro_batch_tokens=16, placement=placement)  # several micro-batches
    params = ReinforcementParams(algorithm=algorithm, group_size=4, kl_coef=0.01)
    good_before, bad_before = completion_logprob(model, PROMPT, GOOD), completion_logprob(model, PROMPT, BAD)
    # What the update computes in: bf16 in both modes (weights, or autocast over fp32 weights).
    seen, computed = [], []
    model.lm_head.register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
    for _ in range(5):
        old = [completion_logprob(model, PROMPT, c) / len(c) for c in (GOOD, BAD, GOOD, BAD)]
        group = Group(PROMPT, [GOOD, BAD, GOOD, BAD], [[o] * 3 for o in old], [1.0, 0.0, 1.0, 0.0])
        seen.clear()
        metrics = updater.train_rl(model, reference, optimizer, [group], params, 0, value_head)
        computed += seen
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
    assert completion_logprob(model, PROMPT, GOOD) > good_before + 0.5
    assert completion_logprob(model, PROMPT, BAD) < bad_before
    assert {p.dtype for p in model.parameters()} == {placement.weights_dtype}
    assert computed and set(computed) == {torch.bfloat16}, computed
    if value_head is not None:  # GAE runs on fp32 values whatever the precision
        batch = build_sequence_batch([PROMPT], [GOOD], None, 0)
        with placement.autocast(), torch.no_grad():
            assert forward(model, batch, value_head).values.dtype == torch.float32


def test_create_job_refuses_only_dtypes_the_weights_cannot_be_cast_to() -> None:
    fp32, bf16 = Placement(torch.device("cpu"), "fp32"), Placement(torch.device("cpu"), "bf16")
    assert served_dtype_problem("bfloat16", fp32) is None
    assert served_dtype_problem("float32", bf16) is None
    assert served_dtype_problem("float16", fp32) is None
    assert "start the rollout with --dtype bfloat16" in served_dtype_problem("float16", bf16)
    assert "cannot be cast" in served_dtype_problem("int64", fp32)
