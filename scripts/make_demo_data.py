"""Write the demo task's data: two-digit addition in OpenAI's RFT JSONL format.

Every line is one problem:

    {"messages": [{"role": "user", "content": "What is 47 + 38?"}], "answer": "85", "a": 47, "b": 38}

`messages` is the prompt (it ends with the user turn); every other field is the item a
grader sees: `{{item.answer}}` is the reference. The task universe is every unordered
pair {a, b} of two-digit numbers (4,095 problems); a seeded shuffle splits it into three
disjoint sets, so no problem (in either order, "47 + 38" or "38 + 47") is in two files:

    valid.jsonl  held-out problems, for evaluation only
    train.jsonl  prompts the reinforcement job samples from
    sft.jsonl    every other problem, in both orders: the base model's pre-training data

and grader.json is the grader spec the demo job uses (an exact string match of the
sample against `item.answer`; string_check needs no sandbox). docs/demo-task.md says
why this task and not a ranked-list one.

    python scripts/make_demo_data.py --out examples/demo --seed 0
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys
from collections.abc import Iterable

LOW, HIGH = 10, 99
"""Operands are LOW..HIGH inclusive."""

GRADER = {
    "type": "string_check",
    "name": "exact_answer",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def prompt(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


def record(a: int, b: int) -> dict:
    """One RFT JSONL object for the problem a + b."""
    return {"messages": [{"role": "user", "content": prompt(a, b)}], "answer": str(a + b), "a": a, "b": b}


def problems() -> list[tuple[int, int]]:
    """Every unordered pair (a <= b) of operands, in a fixed order."""
    return [(a, b) for a in range(LOW, HIGH + 1) for b in range(a, HIGH + 1)]


def split(
    seed: int, n_valid: int, n_train: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]]:
    """(valid, train, sft) ordered pairs. valid and train show each problem in one
    random order; sft holds every remaining problem in both orders (a + a once)."""
    rng = random.Random(seed)
    pairs = problems()
    if n_valid + n_train >= len(pairs):
        raise ValueError(f"n_valid + n_train must stay below {len(pairs)} problems")
    rng.shuffle(pairs)
    valid = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in pairs[:n_valid]]
    train = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in pairs[n_valid : n_valid + n_train]]
    sft = sorted({order for a, b in pairs[n_valid + n_train :] for order in ((a, b), (b, a))})
    rng.shuffle(sft)
    return valid, train, sft


def write_jsonl(path: pathlib.Path, rows: Iterable[dict]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, separators=(", ", ": ")) + "\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="examples/demo", help="output directory [default: examples/demo]")
    parser.add_argument("--seed", type=int, default=0, help="split seed [default: 0]")
    parser.add_argument("--valid", type=int, default=300, help="validation problems [default: 300]")
    parser.add_argument("--train", type=int, default=1000, help="training prompts [default: 1000]")
    args = parser.parse_args(argv)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    valid, train, sft = split(args.seed, args.valid, args.train)
    for name, pairs in (("valid", valid), ("train", train), ("sft", sft)):
        count = write_jsonl(out / f"{name}.jsonl", (record(a, b) for a, b in pairs))
        print(f"{out / name}.jsonl: {count} lines")
    (out / "grader.json").write_text(json.dumps(GRADER, indent=2) + "\n", encoding="utf-8")
    print(f"{out / 'grader.json'}: {GRADER['type']}")


if __name__ == "__main__":
    main(sys.argv[1:])
