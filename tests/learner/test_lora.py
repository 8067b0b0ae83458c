"""LoRA on a real (tiny) model: only adapters train, the KL reference is the frozen base,
what goes to the rollout is the adapter alone, and checkpoints reload the same policy."""

from __future__ import annotations

import re

import torch
from rft_learner.hparams import LoraSpec, ReinforcementParams
from rft_learner.trainer import checkpoint as ckpt
from rft_learner.trainer import lora
from rft_learner.trainer.policy import build_sequence_batch, load_model, load_tokenizer, trainable_parameters
from rft_learner.trainer.updates import Group, reference_logprobs, rl_update
from test_updates import BAD, GOOD, completion_logprob

PROMPT = [1, 60, 61, 62, 2, 1, 70]
SPEC = LoraSpec(rank=4, alpha=8.0)


def train_adapter(tiny_model, steps: int = 5):
    torch.manual_seed(0)
    model = lora.add_adapter(load_model(tiny_model), SPEC)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=1e-2)
    params = ReinforcementParams(algorithm="grpo", group_size=4, kl_coef=0.01, lora_rank=SPEC.rank)
    for _ in range(steps):
        old = [completion_logprob(model, PROMPT, c) / len(c) for c in (GOOD, BAD, GOOD, BAD)]
        group = Group(PROMPT, [GOOD, BAD, GOOD, BAD], [[o] * 3 for o in old], [1.0, 0.0, 1.0, 0.0])
        metrics = rl_update(model, None, optimizer, [group], params, 0)
    return model, metrics


def test_only_adapters_train_and_the_reference_is_the_untouched_base(tiny_model) -> None:
    base = load_model(tiny_model)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    good_before = completion_logprob(base, PROMPT, GOOD)

    model, metrics = train_adapter(tiny_model)

    assert completion_logprob(model, PROMPT, GOOD) > good_before + 0.5
    assert metrics["kl"] > 0  # the policy moved away from the reference
    for name, tensor in lora.base_state_dict(model).items():
        assert torch.equal(tensor, before[name]), f"{name} changed; only adapters may train"
    # With the adapter off, the model is the base: that is the KL reference.
    batch = build_sequence_batch([PROMPT], [GOOD], None, 0)
    with torch.no_grad():
        expected = completion_logprob(base, PROMPT, GOOD)
    got = float((reference_logprobs(model, None, batch) * batch.action_mask).sum())
    assert abs(got - expected) < 1e-5


def test_the_rollout_gets_the_adapter_alone_under_peft_names(tiny_model) -> None:
    model, _ = train_adapter(tiny_model, steps=1)
    adapter = lora.adapter_state_dict(model)
    full = sum(t.numel() for t in lora.base_state_dict(model).values())
    pattern = re.compile(r"base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.lora_[AB]\.weight")
    assert adapter and all(pattern.fullmatch(n) for n in adapter), list(adapter)
    assert sum(t.numel() for t in adapter.values()) < full / 5
    for name, tensor in adapter.items():
        assert (tensor.shape[0] if ".lora_A." in name else tensor.shape[1]) == SPEC.rank
    # The base goes once, under the plain model's names (tied lm_head included).
    assert set(lora.base_state_dict(model)) == set(load_model(tiny_model).state_dict())


def test_a_lora_checkpoint_holds_the_merged_model_and_reloads_the_same_adapter(tiny_model, tmp_path) -> None:
    model, _ = train_adapter(tiny_model)
    tokenizer = load_tokenizer(tiny_model)
    saved = ckpt.save_checkpoint(tmp_path, 5, model, tokenizer, {"phase": "rl"})
    ids = torch.tensor([PROMPT + GOOD])
    with torch.no_grad():
        expected = model(input_ids=ids).logits

        merged = load_model(saved / "model")  # what ListCheckpoints and exports offer: a plain HF model
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=0)

        resumed = lora.add_adapter(load_model(tiny_model), SPEC)
        lora.load_adapter_weights(resumed, saved / "model" / ckpt.ADAPTER_DIR)
        assert torch.equal(resumed(input_ids=ids).logits, expected)
