"""Local inputs (grader specs, JSONL datasets and samples) read with errors that point at
the file, line and column to fix. Every reader raises CliError (exit code 2)."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from rft_cli.output import CliError

MAX_REPORTED_LINES = 20


def _read_text(path: str, what: str) -> str:
    file = pathlib.Path(path)
    if not file.exists():
        raise CliError(f"{what} {path}: no such file")
    if file.is_dir():
        raise CliError(f"{what} {path}: is a directory, expected a file")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise CliError(f"{what} {path}: cannot read ({exc.strerror})") from None


def _position(exc: json.JSONDecodeError) -> str:
    return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """`text` as a JSON object; `what` names its origin in errors (e.g. '--item')."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what}: invalid JSON at {_position(exc)}") from None
    if not isinstance(value, dict):
        raise CliError(f"{what}: expected a JSON object {{...}}, got {type(value).__name__}")
    return value


def read_json_object(path: str, what: str) -> dict[str, Any]:
    """A file holding one JSON object, e.g. a grader spec."""
    return parse_json_object(_read_text(path, what), f"{what} {path}")


def read_jsonl(path: str, what: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-empty line; every bad line is reported at once."""
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    for number, line in enumerate(_read_text(path, what).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: invalid JSON at column {exc.colno}: {exc.msg}")
            continue
        if not isinstance(value, dict):
            problems.append(f"line {number}: expected a JSON object {{...}}, got {type(value).__name__}")
            continue
        rows.append((number, value))
    if problems:
        raise CliError(_problems(f"{what} {path}", problems))
    if not rows:
        raise CliError(f"{what} {path}: no lines (expected one JSON object per line)")
    return rows


def _problems(where: str, problems: list[str]) -> str:
    shown = problems[:MAX_REPORTED_LINES]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    return f"{where}: {len(problems)} bad line(s):\n  " + "\n  ".join(shown) + tail


@dataclasses.dataclass(frozen=True)
class Example:
    """A dataset line: the prompt messages and the item (every other field)."""

    line: int
    messages: list[dict[str, str]]
    item: dict[str, Any]


def read_dataset(path: str) -> list[Example]:
    """A JSONL dataset in OpenAI's RFT format ({"messages": [...], ...other fields})."""
    examples, problems = [], []
    for number, row in read_jsonl(path, "dataset"):
        messages = row.pop("messages", None)
        if not isinstance(messages, list) or not messages:
            problems.append(f"line {number}: 'messages' must be a non-empty list of {{role, content}}")
            continue
        bad = [i for i, m in enumerate(messages) if not isinstance(m, dict) or not isinstance(m.get("content"), str)]
        if bad:
            problems.append(f"line {number}: messages[{bad[0]}] needs a string 'content'")
            continue
        examples.append(Example(number, messages, row))
    if problems:
        raise CliError(_problems(f"dataset {path}", problems))
    return examples


@dataclasses.dataclass(frozen=True)
class SampleLine:
    """One line of a `graders run --file`: the model's answer and the dataset item."""

    line: int
    output_text: str
    output_json: dict[str, Any] | None
    item: dict[str, Any]


SAMPLE_KEYS = ("sample", "model_sample", "output_text", "output_json")


def sample_from_row(number: int, row: dict[str, Any]) -> SampleLine:
    """Accepted shapes (OpenAI's graders run and our datasets):

    {"sample": "text", "item": {...}} · {"sample": {"output_text": ..., "output_json": ...}, "item": {...}}
    {"model_sample": "text", "item": {...}} · {"output_text": "text", ...}: without "item",
    every field other than the sample and "messages" is the item (a dataset line plus an answer).
    """
    sample: Any = row.get("sample", row.get("model_sample"))
    output_json = None
    if sample is None:
        if "output_text" not in row:
            raise ValueError('no sample: give "sample" (text or {"output_text": ...}) or "output_text"')
        sample = {"output_text": row["output_text"], "output_json": row.get("output_json")}
    if isinstance(sample, dict):
        output_json = sample.get("output_json")
        sample = sample.get("output_text")
    if not isinstance(sample, str):
        raise ValueError("the sample's text must be a string")
    if output_json is not None and not isinstance(output_json, dict):
        raise ValueError("output_json must be a JSON object")
    if "item" in row:
        item = row["item"]
        if not isinstance(item, dict):
            raise ValueError('"item" must be a JSON object')
    else:
        item = {k: v for k, v in row.items() if k not in SAMPLE_KEYS and k != "messages"}
    return SampleLine(number, sample, output_json, item)


def read_samples(path: str) -> list[SampleLine]:
    out, problems = [], []
    for number, row in read_jsonl(path, "samples file"):
        try:
            out.append(sample_from_row(number, row))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise CliError(_problems(f"samples file {path}", problems))
    return out
