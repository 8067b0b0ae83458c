"""Examples from a validated JSONL file, and a resumable, seeded cursor over them."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Example:
    """One dataset line: the prompt messages and the item (every other field)."""

    messages: list[dict[str, Any]]
    item: dict[str, Any]


def load_examples(path: str | pathlib.Path) -> list[Example]:
    examples = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                obj = json.loads(line)
                messages = obj.pop("messages")
                examples.append(Example(messages=messages, item=obj))
    return examples


def reference_answer(example: Example, field: str) -> str:
    """The item's `field` (dotted paths allowed) as text, for SFT targets."""
    value: Any = example.item
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"example has no field {field!r}")
        value = value[part]
    return value if isinstance(value, str) else json.dumps(value)


@dataclasses.dataclass
class DataCursor:
    """Walks a dataset in a seeded random order, epoch after epoch.

    The order of epoch e is a permutation drawn from seed + e, so the cursor's whole
    state is (epoch, position) and a resumed job sees exactly the same batches.
    """

    size: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(self.seed + epoch).permutation(self.size)

    def next_batch(self, batch_size: int) -> list[int]:
        """Indices of the next batch; wraps into the next epoch when one runs out."""
        indices: list[int] = []
        while len(indices) < batch_size:
            order = self._order(self.epoch)
            take = min(batch_size - len(indices), self.size - self.position)
            indices.extend(int(i) for i in order[self.position : self.position + take])
            self.position += take
            if self.position >= self.size:
                self.epoch += 1
                self.position = 0
        return indices

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "size": self.size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["size"] != self.size or state["seed"] != self.seed:
            raise ValueError("checkpoint cursor does not match this dataset")
        self.epoch, self.position = state["epoch"], state["position"]


def steps_per_epoch(size: int, batch_size: int) -> int:
    return max(1, -(-size // batch_size))
