"""Validation of fine-tuning datasets in OpenAI's RFT JSONL format.

One JSON object per line: `messages`, a non-empty list of {role, content} turns
ending with a user turn, plus any other fields, which become the grader's `item`.
Validation reports every bad line (its 1-based number and the reason) so a user can
fix a file in one pass.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator

KNOWN_ROLES = ("system", "developer", "user", "assistant")
MAX_NESTING = 64
"""Deepest JSON nesting a line may have: the grader's protobuf Struct and Python's own
recursion both give out long before a few thousand levels."""


@dataclasses.dataclass(frozen=True)
class LineError:
    """A line that is not a valid example."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


@dataclasses.dataclass
class DatasetReport:
    """Outcome of validating a whole file."""

    examples: int = 0
    errors: list[LineError] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self, limit: int = 20) -> str:
        shown = "\n".join(str(e) for e in self.errors[:limit])
        more = len(self.errors) - limit
        return shown + (f"\n... and {more} more bad lines" if more > 0 else "")


def _content_error(content: object) -> str | None:
    if isinstance(content, str):
        return None
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content
    ):
        return None
    return 'must be a string or a list of {"type": "text", "text": ...} parts'


def example_error(obj: object) -> str | None:
    """Why `obj` (one parsed line) is not a valid example, or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    messages = obj.get("messages")
    if messages is None:
        return "missing field 'messages'"
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            return f"{where} must be an object with 'role' and 'content'"
        role = message.get("role")
        if role not in KNOWN_ROLES:
            return f"{where}.role is {role!r}; expected one of {', '.join(KNOWN_ROLES)}"
        if "content" not in message:
            return f"{where} is missing 'content'"
        problem = _content_error(message["content"])
        if problem:
            return f"{where}.content {problem}"
    if messages[-1].get("role") != "user":
        return f"the last message must be from the user, got role {messages[-1].get('role')!r}"
    return None


@dataclasses.dataclass(frozen=True)
class OverlongLine:
    """A line longer than the limit, kept only as its length."""

    length: int


def iter_lines(chunks: Iterable[bytes], max_line_bytes: int | None = None) -> Iterator[bytes | OverlongLine]:
    """Split a byte stream into lines without holding the whole file: each chunk is scanned
    once (linear in the file, however long a line), and a line over `max_line_bytes` is
    not held at all, only measured."""
    pending: list[bytes] = []
    held = 0

    def finish() -> bytes | OverlongLine:
        nonlocal pending, held
        line = OverlongLine(held) if max_line_bytes is not None and held > max_line_bytes else b"".join(pending)
        pending, held = [], 0
        return line

    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            piece = chunk[start:end]
            held += len(piece)
            if max_line_bytes is None or held <= max_line_bytes:
                pending.append(piece)
            yield finish()
            start = end + 1
        piece = chunk[start:]
        held += len(piece)
        if piece and (max_line_bytes is None or held <= max_line_bytes):
            pending.append(piece)
    if held:
        yield finish()


def _nesting_depth(value: object) -> int:
    """How deep containers nest in a parsed JSON value (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def validate_lines(lines: Iterable[bytes | OverlongLine], max_line_bytes: int) -> DatasetReport:
    """Validate every line; blank lines are ignored."""
    report = DatasetReport()
    for number, raw in enumerate(lines, start=1):
        length = raw.length if isinstance(raw, OverlongLine) else len(raw)
        if length > max_line_bytes:
            report.errors.append(LineError(number, f"line is {length} bytes; the limit is {max_line_bytes}"))
            continue
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.errors.append(LineError(number, f"not valid UTF-8 at byte {exc.start}"))
            continue
        if "\x00" in text:
            report.errors.append(
                LineError(number, f"a NUL byte at column {text.index(chr(0)) + 1}; JSON text has none")
            )
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            # json's messages end in " at" ("Invalid control character at"): the column follows.
            report.errors.append(
                LineError(number, f"invalid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}")
            )
            continue
        except RecursionError:
            report.errors.append(LineError(number, f"JSON nested too deeply; the limit is {MAX_NESTING} levels"))
            continue
        depth = _nesting_depth(obj)
        if depth > MAX_NESTING:
            report.errors.append(LineError(number, f"JSON nested {depth} levels deep; the limit is {MAX_NESTING}"))
            continue
        problem = example_error(obj)
        if problem:
            report.errors.append(LineError(number, problem))
        else:
            report.examples += 1
    if report.examples == 0 and not report.errors:
        report.errors.append(LineError(0, "the file has no examples: it is empty or holds only blank lines"))
    return report
