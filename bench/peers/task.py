"""The peers benchmark's task and RL maths, shared by the floor (.venv) and TRL (.venv-bench).

Plain Python and torch only: both environments import it. The task is the demo's:
two-digit addition, graded by exact match of the completion text with `answer` (the
demo grader's string_check "eq").
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

BATCH_PROMPTS = 32
GROUP_SIZE = 8
MAX_NEW_TOKENS = 6
LEARNING_RATE = 5e-4
EVAL_SAMPLES = 4
MAX_GRAD_NORM = 1.0  # the learner's (trainer/updates.py)


def load_jsonl(path: str | pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def reward(text: str, answer: str) -> float:
    """The demo grader: string_check, operation "eq", output_text against item.answer."""
    return 1.0 if text == answer else 0.0


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The order of one epoch (as the learner's DataCursor: a permutation from seed + epoch)."""
    return np.random.default_rng(seed + epoch).permutation(size)


def batches(size: int, seed: int, steps: int, batch: int = BATCH_PROMPTS):
    """Index lists of `steps` batches, epoch after epoch (size is a multiple of batch)."""
    epoch, position = 0, 0
    for _ in range(steps):
        order = epoch_order(size, seed, epoch)
        yield [int(i) for i in order[position : position + batch]]
        position += batch
        if position >= size:
            epoch, position = epoch + 1, 0


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (DeepSeekMath): (r - mean) / (population std + eps) over each group (row)."""
    centred = rewards - rewards.mean(dim=-1, keepdim=True)
    return centred / (rewards.std(dim=-1, keepdim=True, correction=0) + eps)


def grpo_step(model, optimizer, prompts: list[list[int]], completions: list[list[int]], advantages: list[float],
              pad_id: int) -> float:  # fmt: skip
    """One on-policy GRPO update, as the learner's at kl_coef 0 with one optimizer step:
    loss = -mean over completion tokens of A * exp(logp - stop_grad(logp)) (the ratio is 1,
    so its gradient is the policy gradient), token-mean aggregation over the batch,
    gradient clipped to MAX_GRAD_NORM, one AdamW step. Returns the loss."""
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attention[i, : len(p) + len(c)] = 1
        mask[i, len(p) : len(p) + len(c)] = 1.0
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = mask[:, 1:]
    adv = torch.tensor(advantages, dtype=torch.float32)[:, None]
    per_token = -adv * torch.exp(logprobs - logprobs.detach())
    loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    return float(loss)


def train_file_lines(train: list[dict], steps: int, max_steps_per_epoch: int = 30) -> tuple[list[dict], int]:
    """The first examples of the training set such that `steps` = epochs x whole batches:
    (examples, n_epochs). 150 steps -> 960 examples (30 batches of 32) x 5 epochs."""
    epochs = -(-steps // max_steps_per_epoch)
    while steps % epochs:
        epochs += 1
    per_epoch = steps // epochs
    if per_epoch * BATCH_PROMPTS > len(train):
        raise SystemExit(f"{steps} steps need {per_epoch * BATCH_PROMPTS} training examples per epoch")
    return train[: per_epoch * BATCH_PROMPTS], epochs


def median_after_warmup(values: list[float], warmup: int) -> float:
    measured = values[warmup:] or values
    return float(np.median(measured)) if measured else float("nan")


def window_mean(values: list[float], end: int, width: int = 10) -> float:
    """Mean of the `width` values ending at step `end` (1-based); nan past the run."""
    if end > len(values):
        return float("nan")
    window = values[max(0, end - width) : end]
    return float(np.mean(window))
