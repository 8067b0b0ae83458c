"""The shared-prompt forward pass (each group's prompt through the model once, its
key/value cache repeated for the group's samples) gives the plain forward pass's
log-probs, entropies and gradients, on a real (tiny) Qwen2 model: prompts of different
lengths, completions of different lengths, an episode's masked tool tokens, a group of
one, and a LoRA model."""

from __future__ import annotations

import pytest
import torch
from rft_learner.trainer.policy import (
    build_sequence_batch,
    forward,
    forward_shared_prompts,
    load_model,
    prompt_runs,
)

PROMPTS = [[1, 60, 61, 62, 2, 1, 70], [1, 80, 2], [1, 90, 91, 92, 93, 94, 95, 96, 2, 1]]


def rows() -> tuple[list[list[int]], list[list[int]], list[list[int] | None]]:
    """Three groups (3, 1 and 4 samples) with completions of 1 to 9 tokens; one sample is
    an episode whose tokens 3-5 were inserted by a tool (mask 0)."""
    completions = [[40, 41, 42], [43], [44, 45, 46, 47, 48, 49, 50, 51, 52], [53, 54], [55, 56, 57, 58], [59], [60, 61],
                   [62, 63, 64, 65, 66, 67]]  # fmt: skip
    prompts = [PROMPTS[0]] * 3 + [PROMPTS[1]] + [list(PROMPTS[2]) for _ in range(4)]  # equal lists, not one object
    masks: list[list[int] | None] = [None] * len(completions)
    masks[2] = [1, 1, 1, 0, 0, 0, 1, 1, 1]
    return prompts, completions, masks


def test_prompt_runs_groups_consecutive_rows_with_equal_prompts() -> None:
    prompts, _, _ = rows()
    assert prompt_runs(prompts) == [3, 1, 4]
    assert prompt_runs([[1, 2], [1, 3], [1, 2]]) == [1, 1, 1]  # only consecutive rows share


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prompt_forward_equals_the_plain_forward_with_gradients(tiny_model, lora: bool) -> None:
    torch.manual_seed(0)
    model = load_model(tiny_model)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        for name, param in model.named_parameters():  # a non-zero adapter, so it shows in the output
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.1)
    prompts, completions, masks = rows()
    batch = build_sequence_batch(prompts, completions, None, 0, masks)
    completion_positions = torch.zeros_like(batch.action_mask)
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        completion_positions[row, len(prompt) - 1 : len(prompt) + len(completion) - 1] = 1
    weights = torch.randn(batch.action_mask.shape)

    def run(shared: bool):
        model.zero_grad(set_to_none=True)
        if shared:
            out = forward_shared_prompts(model, batch, [len(p) for p in prompts], prompt_runs(prompts))
        else:
            out = forward(model, batch)
        (out.logprobs * weights * batch.action_mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    plain, plain_grads = run(shared=False)
    shared, shared_grads = run(shared=True)
    on = completion_positions.bool()
    torch.testing.assert_close(shared.logprobs[on], plain.logprobs[on], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared.entropy[on], plain.entropy[on], rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(shared.logprobs[~on]) == 0  # prompt and padding positions hold nothing
    assert plain_grads.keys() == shared_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        # float32 sums in another order: within a millionth of the tensor's largest entry
        error = float((shared_grads[name] - grad).abs().max())
        assert error <= 1e-5 * float(grad.abs().max()) + 1e-8, (name, error)
    assert any(float(g.abs().max()) > 0 for g in plain_grads.values())


def test_rl_update_takes_the_shared_prompt_pass_on_a_qwen2_group(tiny_model, monkeypatch) -> None:
    """One GRPO pass over a group: the update's training forward is the shared-prompt one."""
    from rft_learner.hparams import ReinforcementParams
    from rft_learner.trainer import updates

    calls = []
    monkeypatch.setattr(
        updates, "forward_shared_prompts", lambda *a, **k: calls.append(1) or forward_shared_prompts(*a, **k)
    )
    model = load_model(tiny_model)
    group = updates.Group(
        PROMPTS[0], [[40, 41], [42], [43, 44, 45]], [[-1.0, -1.0], [-1.0], [-1.0] * 3], [1.0, 0.0, 1.0]
    )
    params = ReinforcementParams(algorithm="grpo", group_size=3, kl_coef=0.0)
    updates.rl_update(model, None, torch.optim.SGD(model.parameters(), lr=1e-3), [group], params, 0)
    assert calls == [1]
