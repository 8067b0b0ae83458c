"""The policy model: loading a Hugging Face directory, batching sequences, token logprobs."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rft_learner.rl import chunked_entropy, chunked_token_logprobs
from rft_learner.trainer.devices import CPU_FP32, Placement


def load_model(model_dir: str | pathlib.Path, placement: Placement = CPU_FP32, frozen: bool = False) -> PreTrainedModel:
    """The model in `model_dir` on the placement's device, in its weights dtype (or, for a
    model that is never trained such as the KL reference, `frozen`, its frozen dtype)."""
    dtype = placement.frozen_dtype if frozen else placement.weights_dtype
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(placement.device)
    model.config.use_cache = False
    return model


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_tokenizer(model_dir: str | pathlib.Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def trainable_parameters(*modules: torch.nn.Module | None) -> list[torch.nn.Parameter]:
    """What the optimizer steps: every weight, or only the adapters of a LoRA model."""
    return [p for module in modules if module is not None for p in module.parameters() if p.requires_grad]


class ValueHead(torch.nn.Module):
    """Scalar value per position from the policy's last hidden state (PPO, as in ReFT)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        # Linear's random init would consume the global RNG, which a resumed job restores
        # from its checkpoint before building the head: draw from a throwaway copy.
        with torch.random.fork_rng(devices=[]):
            self.proj = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.proj.weight)
        torch.nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden).squeeze(-1)


@dataclasses.dataclass
class SequenceBatch:
    """Prompt + completion sequences, right-padded.

    Position t of the [B, L-1] tensors is the prediction of token t+1: `action_mask`
    marks completion tokens, `old_logprobs` holds the sampling policy's logprobs there.
    """

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    action_mask: torch.Tensor  # [B, L-1] float
    old_logprobs: torch.Tensor  # [B, L-1]

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device) -> SequenceBatch:
        return SequenceBatch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def build_sequence_batch(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    completion_logprobs: Sequence[Sequence[float]] | None,
    pad_id: int,
    completion_masks: Sequence[Sequence[int] | None] | None = None,
) -> SequenceBatch:
    """Right-padded rows of prompt + completion. The action mask is 1 on each completion
    token, or, where `completion_masks` gives a row's mask (a multi-turn episode), that
    mask's value (0 on tool-result tokens: they are in the sequence, so the model reads
    them, but they are not actions and never enter a loss)."""
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    width = max(lengths)
    batch = len(lengths)
    input_ids = np.full((batch, width), pad_id, dtype=np.int64)
    attention = np.zeros((batch, width), dtype=np.int64)
    action = np.zeros((batch, width - 1), dtype=np.float32)
    old = np.zeros((batch, width - 1), dtype=np.float32)
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        p, c = len(prompt), len(completion)
        input_ids[row, :p] = prompt
        input_ids[row, p : p + c] = completion
        attention[row, : p + c] = 1
        given = completion_masks[row] if completion_masks is not None else None
        if given is None:
            action[row, p - 1 : p + c - 1] = 1.0
        else:
            if len(given) != c:
                raise ValueError(f"row {row}: a mask of {len(given)} for a completion of {c} tokens")
            action[row, p - 1 : p + c - 1] = given
        if completion_logprobs is not None:
            old[row, p - 1 : p + c - 1] = completion_logprobs[row]
    return SequenceBatch(
        torch.from_numpy(input_ids), torch.from_numpy(attention), torch.from_numpy(action), torch.from_numpy(old)
    )


@dataclasses.dataclass
class ForwardOutput:
    logprobs: torch.Tensor  # [B, L-1] logprob of token t+1
    entropy: torch.Tensor  # [B, L-1]
    values: torch.Tensor | None  # [B, L-1] value of the state before token t+1


LOGIT_BLOCK_ELEMENTS = 1 << 26
"""Logits upcast to float32 at once by `forward` (256 MiB): positions per block = this / vocabulary."""


def logit_block_positions(vocab_size: int) -> int:
    return max(1, LOGIT_BLOCK_ELEMENTS // vocab_size)


def forward(
    model: torch.nn.Module, batch: SequenceBatch, value_head: ValueHead | None = None, with_entropy: bool = True
) -> ForwardOutput:
    """Sampled tokens' log-probs (and entropy, values) of a batch. The logits stay in the model's
    dtype; log-softmax and entropy upcast them one block of positions at a time (rl.losses)."""
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        output_hidden_states=value_head is not None,
        use_cache=False,
    )
    logits = out.logits[:, :-1]
    block = logit_block_positions(logits.shape[-1])
    logprobs = chunked_token_logprobs(logits, batch.input_ids[:, 1:], block)
    entropy = chunked_entropy(logits.detach(), block) if with_entropy else torch.zeros_like(logprobs)
    # fp32 values: GAE's recursion over bf16 values would round away per-token KL penalties.
    values = value_head(out.hidden_states[-1][:, :-1]).float() if value_head is not None else None
    return ForwardOutput(logprobs, entropy, values)


SHARED_PROMPT_MODEL_TYPES = frozenset({"qwen2", "qwen3", "llama"})
"""Architectures `forward_shared_prompts` runs on: a plain key/value cache that
`reorder_cache` repeats, and positions taken from `position_ids` (tested on Qwen2)."""


def shares_prompts(model: torch.nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in SHARED_PROMPT_MODEL_TYPES


def prompt_runs(prompts: Sequence[Sequence[int]]) -> list[int]:
    """Lengths of the runs of consecutive rows with the same prompt (a group's samples)."""
    runs: list[int] = []
    for row, prompt in enumerate(prompts):
        if runs and (prompt is prompts[row - 1] or list(prompt) == list(prompts[row - 1])):
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


def forward_shared_prompts(
    model: torch.nn.Module,
    batch: SequenceBatch,
    prompt_lengths: Sequence[int],
    runs: Sequence[int],
    with_entropy: bool = True,
) -> ForwardOutput:
    """`forward` (no value head) for rows whose prompts repeat in `runs` (`prompt_runs`):
    each distinct prompt goes through the model once, its key/value cache is repeated for
    the rows of its run, and only the completions go through per row. The log-probs,
    entropies and gradients are `forward`'s (tests/learner/test_shared_prompts.py), for
    (prompt tokens + completion tokens) / (rows x (prompt + completion)) of the compute:
    a group of 8 samples of a 35-token prompt with 6-token answers costs ~1/3.

    Prompts are left-padded among themselves (each one's last token is then the last
    position, whose logits predict its completions' first token); completions keep the
    batch's right padding, and positions are given explicitly."""
    device = batch.input_ids.device
    rows = batch.size
    lengths = batch.attention_mask.sum(dim=1).tolist()
    prompt_len = torch.tensor(prompt_lengths, device=device)
    starts = np.cumsum([0, *runs[:-1]]).tolist()
    widest = max(prompt_lengths[start] for start in starts)
    prompt_ids = torch.zeros((len(runs), widest), dtype=batch.input_ids.dtype, device=device)
    prompt_mask = torch.zeros((len(runs), widest), dtype=batch.attention_mask.dtype, device=device)
    for run, start in enumerate(starts):
        length = prompt_lengths[start]
        prompt_ids[run, widest - length :] = batch.input_ids[start, :length]
        prompt_mask[run, widest - length :] = 1
    prompt_positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)
    head = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=prompt_positions,
        use_cache=True,
        logits_to_keep=1,
    )
    cache = head.past_key_values
    row_run = torch.repeat_interleave(torch.arange(len(runs), device=device), torch.tensor(runs, device=device))
    cache.reorder_cache(row_run)  # each row gets its prompt's keys and values (autograd flows back)

    completion_lengths = [total - prompt for total, prompt in zip(lengths, prompt_lengths, strict=True)]
    longest = max(completion_lengths)
    offsets = torch.arange(longest, device=device)
    columns = (prompt_len[:, None] + offsets).clamp(max=batch.input_ids.shape[1] - 1)
    valid = offsets[None, :] < torch.tensor(completion_lengths, device=device)[:, None]
    completion_ids = torch.where(valid, batch.input_ids.gather(1, columns), 0)
    mask = torch.cat([prompt_mask[row_run], valid.to(prompt_mask.dtype)], dim=1)
    tail = model(
        input_ids=completion_ids,
        attention_mask=mask,
        position_ids=prompt_len[:, None] + offsets,
        past_key_values=cache,
        use_cache=False,
    )
    # Completion token j of a row is predicted at its prompt's last position (j = 0) or at
    # its own position j - 1.
    logits = torch.cat([head.logits[row_run, -1:], tail.logits[:, :-1]], dim=1)
    block = logit_block_positions(logits.shape[-1])
    logprobs = chunked_token_logprobs(logits, completion_ids, block)
    entropy = chunked_entropy(logits.detach(), block) if with_entropy else torch.zeros_like(logprobs)

    # Back to the batch's layout: position t of a row predicts its token t + 1.
    width = batch.action_mask.shape[1]
    targets = (prompt_len[:, None] - 1 + offsets).clamp(max=width - 1)

    def place(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((rows, width), dtype=values.dtype, device=device)
        return out.scatter_add(1, targets, torch.where(valid, values, torch.zeros_like(values)))

    return ForwardOutput(place(logprobs), place(entropy), None)
