"""Size limits of the grader, and the helpers that keep work and answers inside them.

A small request must not become a huge render, a huge response or a long stall of the
event loop (issue #13). `Limits` holds the values an operator may tune (GraderConfig
takes its defaults from here). `RenderBudget` counts what one Grade call's templates
render. `clip`, `excerpt` and `fit_response` keep error messages short and a
response under its byte budget. `offload` runs CPU work on a thread when its input is
large.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from typing import TypeVar

from rft_grader.domain import GradeError, InvalidRequest, Outcome

T = TypeVar("T")

EXCERPT_CHARS = 200
"""Characters of echoed input (a field name, a label, a model reply) shown in a message."""
INLINE_WORK_CHARS = 64 * 1024
"""Inputs up to this size are parsed on the event loop; larger ones on a thread."""

# Upper bounds of the protobuf encoding of a GradeResponse, without error message text:
# per result its framing, score, passed and error kind; per map entry its framing and value.
_RESPONSE_BYTES = 64
_RESULT_BYTES = 32
_MAP_ENTRY_BYTES = 16


@dataclasses.dataclass(frozen=True)
class Limits:
    """The grader's size limits; docs/graders.md ("Limits") lists what exceeding each gives."""

    max_batch_items: int = 4096
    max_text_chars: int = 1_000_000
    max_spec_bytes: int = 1024**2
    max_multi_graders: int = 16
    max_rendered_chars: int = 4_000_000
    max_call_rendered_chars: int = 256_000_000
    max_error_message_chars: int = 2_000
    max_response_bytes: int = 16 * 1024**2
    spec_cache_bytes: int = 64 * 1024**2
    max_python_tools_bytes: int = 256 * 1024
    max_python_tool_arguments_bytes: int = 64 * 1024


def _more(count: int) -> str:
    return f"… ({count} more characters)"


def clip(text: str, max_chars: int) -> str:
    """`text`, or its start and '… (N more characters)', in at most `max_chars` characters."""
    if len(text) <= max_chars:
        return text
    keep = max_chars - len(_more(len(text)))
    if keep <= 0:
        return text[:max_chars]
    return text[:keep] + _more(len(text) - keep)


def clip_bytes(text: str, max_bytes: int) -> str:
    """`text`, or its start and '… (N more characters)', in at most `max_bytes` of UTF-8."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    room = max_bytes - len(_more(len(text)).encode())
    if room <= 0:
        return data[:max_bytes].decode("utf-8", "ignore")
    kept = data[:room].decode("utf-8", "ignore")
    return kept + _more(len(text) - len(kept))


def excerpt(text: str, max_chars: int = EXCERPT_CHARS) -> str:
    """How echoed input appears in a message: the repr of its first `max_chars`
    characters, and how many more there were."""
    if len(text) <= max_chars:
        return repr(text)
    return f"{text[:max_chars]!r}{_more(len(text) - max_chars)}"


class RenderBudget:
    """Characters the templates of one Grade call may still render.

    One grader may render `per_sample` characters for one sample (all its templates
    together); the whole call, every sample and sub-grader together, `per_call`. A grader
    reserves a sample's grant before rendering and releases what it did not use. A lock
    keeps the count right while a multi's sub-graders render on several threads.
    """

    def __init__(self, per_sample: int, per_call: int) -> None:
        self.per_sample = per_sample
        self.per_call = per_call
        self._left = per_call
        self._lock = threading.Lock()

    @classmethod
    def of(cls, limits: Limits) -> RenderBudget:
        return cls(limits.max_rendered_chars, limits.max_call_rendered_chars)

    def reserve(self) -> int:
        """The most characters the next sample may render (0 once the call's budget is spent)."""
        with self._lock:
            grant = min(self.per_sample, self._left)
            self._left -= grant
            return grant

    def release(self, grant: int, used: int) -> None:
        """Give back the part of `grant` that was not used."""
        with self._lock:
            self._left += max(0, grant - used)

    def too_large(self, field: str, grant: int) -> str:
        """The error of a sample whose `field` did not render within `grant` characters."""
        if grant < self.per_sample:
            return (
                f"{field}: the templates of this Grade call have rendered their {self.per_call} characters "
                "(max_call_rendered_chars); send fewer or smaller items"
            )
        return f"{field}: the templates render to more than {self.per_sample} characters (max_rendered_chars)"


def clip_messages(outcomes: list[Outcome], max_chars: int) -> None:
    """Cut every error message to `max_chars` characters."""
    for outcome in outcomes:
        error = outcome.error
        if error is not None and len(error.message) > max_chars:
            outcome.error = GradeError(error.kind, clip(error.message, max_chars))


def _level(sizes: list[int], budget: int) -> int:
    """The largest cap c with sum(min(size, c)) <= budget ("water filling")."""
    left, count = budget, len(sizes)
    for size in sorted(sizes):
        if size * count > left:
            return left // count
        left -= size
        count -= 1
    return max(sizes, default=0)


def fit_messages(outcomes: list[Outcome], max_message_bytes: int) -> None:
    """Cut error messages so that together they take at most `max_message_bytes` of UTF-8:
    messages shorter than an equal share stay whole, the longer ones share the rest."""
    failed = [outcome for outcome in outcomes if outcome.error is not None]
    sizes = [len(outcome.error.message.encode("utf-8", "replace")) for outcome in failed]
    if sum(sizes) <= max_message_bytes:
        return
    cap = _level(sizes, max_message_bytes)
    for outcome, size in zip(failed, sizes, strict=True):
        if size > cap:
            outcome.error = GradeError(outcome.error.kind, clip_bytes(outcome.error.message, cap))


def _result_bytes(outcome: Outcome) -> int:
    """Upper bound of one GradeResult's encoded size without its error message."""
    keys = [*outcome.sub_scores, *outcome.metrics]
    return _RESULT_BYTES + sum(len(key.encode("utf-8", "replace")) + _MAP_ENTRY_BYTES for key in keys)


def fit_response(outcomes: list[Outcome], limits: Limits) -> None:
    """Keep a Grade response within limits.max_response_bytes: error messages are cut to
    max_error_message_chars, then to their share of what the results leave. Results whose
    scores and metrics alone pass the limit are InvalidRequest, saying how many items fit."""
    clip_messages(outcomes, limits.max_error_message_chars)
    sizes = [_result_bytes(outcome) for outcome in outcomes]
    fixed = _RESPONSE_BYTES + sum(sizes)
    if fixed > limits.max_response_bytes:
        fits = (limits.max_response_bytes - _RESPONSE_BYTES) // max(sizes)
        raise InvalidRequest(
            f"items: the results of {len(outcomes)} items take about {fixed} bytes of scores and metrics; "
            f"at most {limits.max_response_bytes} (max_response_bytes): send at most {fits} items per call"
        )
    fit_messages(outcomes, limits.max_response_bytes - fixed)


async def offload(size: int, fn: Callable[..., T], *args: object) -> T:
    """fn(*args), on a thread when `size` (characters of input) is large, so that the
    event loop keeps serving other calls meanwhile."""
    if size <= INLINE_WORK_CHARS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)
