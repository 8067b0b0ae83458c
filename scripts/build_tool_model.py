"""Build a small tool-calling model: the tiny base model (scripts/build_base_model.py),
trained from scratch on episodes of one tool, `add`, in Qwen's tool-call format.

Every training episode is

    <|im_start|>user\\nadd 17 25<|im_end|>\\n<|im_start|>assistant\\n
    <tool_call>{"name": "add", "arguments": {"a": 17, "b": 25}}</tool_call><|im_end|>      (trained)
    \\n<|im_start|>tool\\n42<|im_end|>\\n<|im_start|>assistant\\n                              (not trained)
    42<|im_end|>                                                                        (trained)

The loss covers only the assistant's tokens (the same mask the rollout service reports
for episodes). With --pairs (the default: the four of PAIRS) the model memorises those
episodes in a few hundred small steps (~1 minute on 2 cores): under greedy decoding it
calls `add` for exactly those prompts and then answers. Tests use it to drive real
episodes through vLLM (tests/rollout/test_episodes.py); models/tool-base is its output.
With --pairs random, a and b are drawn from 0..99 and the model must learn to copy the
operands into the call and the result into the answer: 600 steps of 32 were not enough
for the tiny preset (loss 0.14, operands not copied), so that is left to the demo.

    python scripts/build_tool_model.py --out models/tool-base
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import build_base_model  # noqa: E402

TOOL_NAME = "add"
PAIRS = ((17, 25), (3, 4), (60, 9), (8, 80))
"""The episodes the default model memorises."""


def tool_call_text(a: int, b: int) -> str:
    arguments = {"a": a, "b": b}
    return "<tool_call>" + json.dumps({"name": TOOL_NAME, "arguments": arguments}) + "</tool_call>"


def question(a: int, b: int, task: str = "add") -> str:
    """The user message: "add 17 25" (the test model's) or "What is 734 + 589?" (the demo's)."""
    return f"add {a} {b}" if task == "add" else f"What is {a} + {b}?"


def episode_segments(a: int, b: int, task: str = "add") -> list[tuple[str, bool]]:
    """(text, trained) pieces of one episode, in the model's ChatML format."""
    return [
        (f"<|im_start|>user\n{question(a, b, task)}<|im_end|>\n<|im_start|>assistant\n", False),
        (tool_call_text(a, b) + "<|im_end|>", True),
        (f"\n<|im_start|>tool\n{a + b}<|im_end|>\n<|im_start|>assistant\n", False),
        (f"{a + b}<|im_end|>", True),
    ]


def encode_segments(tokenizer, segments: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    ids, mask = [], []
    for text, trained in segments:
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids += piece
        mask += [int(trained)] * len(piece)
    return ids, mask


def train(
    out_dir: pathlib.Path,
    steps: int,
    batch_size: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    pairs: tuple[tuple[int, int], ...] | None = PAIRS,
    task: str = "add",
    stop_loss: float = 0.0,
) -> pathlib.Path:
    """Train the tiny preset on `pairs` (cycled; None: random operands, 500..999 for the
    "sum3" task) and save it; stop early once the mean loss of the last 10 steps is below
    `stop_loss` (0: never)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_base_model.build_model(out_dir, "tiny", seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    low, high = (500, 1000) if task == "sum3" else (0, 100)
    recent: list[float] = []
    model.train()
    for step in range(steps):
        operands = [
            pairs[(step * batch_size + i) % len(pairs)]
            if pairs
            else (rng.randrange(low, high), rng.randrange(low, high))
            for i in range(batch_size)
        ]
        rows = [encode_segments(tokenizer, episode_segments(a, b, task)) for a, b in operands]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.zeros(batch_size, width, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        attention = torch.zeros(batch_size, width, dtype=torch.long)
        for row, (ids, mask) in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            labels[row, : len(ids)] = torch.tensor([t if m else -100 for t, m in zip(ids, mask, strict=True)])
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recent = [*recent[-9:], loss.item()]
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
        if stop_loss and len(recent) == 10 and sum(recent) / 10 < stop_loss:
            print(f"step {step}: mean loss of the last 10 steps {sum(recent) / 10:.4f} < {stop_loss}: stop", flush=True)
            break
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--steps", type=int, default=200, help="training steps [default: 200]")
    parser.add_argument("--pairs", choices=["fixed", "random"], default="fixed", help="PAIRS or random operands")
    parser.add_argument(
        "--task", choices=["add", "sum3"], default="add", help='"add a b", or the demo\'s "What is a + b?" (500..999)'
    )
    parser.add_argument("--batch-size", type=int, default=8, help="episodes per step [default: 8]")
    parser.add_argument("--stop-loss", type=float, default=0.0, help="stop below this mean loss [default: never]")
    parser.add_argument("--seed", type=int, default=0, help="seed [default: 0]")
    args = parser.parse_args(argv)
    pairs = PAIRS if args.pairs == "fixed" else None
    out = train(
        pathlib.Path(args.out), args.steps, args.batch_size, seed=args.seed, pairs=pairs, task=args.task,
        stop_loss=args.stop_loss,
    )  # fmt: skip
    print(out)


if __name__ == "__main__":
    main(sys.argv[1:])
