"""ranked_list (ours): the answer is a ranked list; score how high the right entry is.

`input` renders to the model's list: a JSON list, else one entry per line when there
are several lines, else comma separated. List markers ("1.", "2)", "-", "*") and
surrounding quotes are dropped. `reference` is the correct entry, or several correct
entries (same formats; a {{item.x}} holding a JSON list is used as the list).
Entries compare after trimming, ignoring case unless case_sensitive.

rank = position of the first listed entry that is correct (only the first max_items
count). Metrics: top@1 (rank 1), top@5 (rank <= 5), top@max (anywhere in the list),
reciprocal_rank (1 / rank, 0 when absent), list_length. The score is the metric named
by score_metric; `passed` means full marks.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from rft_grader.domain import ErrorKind, Outcome, Pair
from rft_grader.graders.base import Grader, Runtime
from rft_grader.spec import RankedListSpec
from rft_grader.templates import Template, format_value

_MARKER = re.compile(r"^(?:[-*\u2022]|\d{1,4}[.)]|\(\d{1,4}\))\s+")
_QUOTES = "\"'`"


def parse_list(value: Any) -> list[str]:
    """Entries of a ranked list given as a JSON value or text."""
    if isinstance(value, list):
        return [entry for entry in (format_value(v).strip() for v in value) if entry]
    text = format_value(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, list):
            return parse_list(parsed)
    pieces = text.splitlines() if "\n" in text else text.split(",")
    entries = []
    for piece in pieces:
        entry = _MARKER.sub("", piece.strip()).strip().strip(_QUOTES).strip()
        if entry:
            entries.append(entry)
    return entries


class RankedListGrader(Grader):
    spec: RankedListSpec

    def __init__(self, spec: RankedListSpec, runtime: Runtime) -> None:
        super().__init__(spec, runtime)
        self.fields = [("input", Template(spec.input)), ("reference", Template(spec.reference))]

    def _key(self, entry: str) -> str:
        return entry if self.spec.case_sensitive else entry.casefold()

    def _one(self, pair: Pair) -> Outcome:
        rendered = self.render(pair, self.fields, raw=("input", "reference"))
        if isinstance(rendered, Outcome):
            return rendered
        ranked = parse_list(rendered[0])[: self.spec.max_items]
        correct = {self._key(entry) for entry in parse_list(rendered[1])}
        if not correct:
            return Outcome.failed(ErrorKind.INVALID_INPUT, "the reference has no entries")
        rank = next((i + 1 for i, entry in enumerate(ranked) if self._key(entry) in correct), None)
        metrics = {
            "top@1": float(rank == 1),
            "top@5": float(rank is not None and rank <= 5),
            "top@max": float(rank is not None),
            "reciprocal_rank": 1.0 / rank if rank else 0.0,
            "list_length": float(len(ranked)),
        }
        score = metrics[self.spec.score_metric]
        return Outcome(score=score, passed=score == 1.0, metrics=metrics)

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        # Linear in the text size, but up to a whole request of text per call: on a thread.
        return await asyncio.to_thread(lambda: [self._one(pair) for pair in pairs])
