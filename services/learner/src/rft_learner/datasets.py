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


@dataclasses.dataclass(frozen=True)
class LineError:
    """A line that is not a valid example."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


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


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a byte stream into lines without holding the whole file."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def validate_lines(lines: Iterable[bytes], max_line_bytes: int) -> DatasetReport:
    """Validate every line; blank lines are ignored."""
    report = DatasetReport()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if len(raw) > max_line_bytes:
            report.errors.append(LineError(number, f"line is {len(raw)} bytes; the limit is {max_line_bytes}"))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.errors.append(LineError(number, f"not valid UTF-8 at byte {exc.start}"))
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            report.errors.append(LineError(number, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        problem = example_error(obj)
        if problem:
            report.errors.append(LineError(number, problem))
        else:
            report.examples += 1
    if report.examples == 0 and not report.errors:
        report.errors.append(LineError(0, "the file has no examples"))
    return report
