"""What every command shares: exit codes, errors that say what to fix, tables and JSON.

Exit codes scripts can trust: 0 success, 1 the service refused or failed the request
(or the job failed), 2 bad usage or an unreadable local input, 3 a service could not
be reached.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class CliError(Exception):
    """An error the user can fix; `message` says how, `code` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def to_dict(message: Message) -> dict[str, Any]:
    """A protobuf message as JSON-ready data, with the .proto field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: Message | Mapping[str, Any] | Sequence[Any], *, lines: bool = False) -> None:
    """JSON on stdout: indented by default, one line per value with `lines` (JSON lines).

    Convention: a command's JSON is the service's response message in the protobuf JSON
    mapping (.proto field names; int64 values as strings), e.g. {"job": {...}}.
    """
    data = to_dict(value) if isinstance(value, Message) else value
    print(json.dumps(data, separators=(",", ":")) if lines else json.dumps(data, indent=2), flush=lines)


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def fmt(value: object) -> str:
    """A cell: floats to 3 decimals, NaN / None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def print_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str], empty: str = "(none)") -> None:
    """Columns padded to their widest cell, headers upper-case (kubectl-style)."""
    if not rows:
        print(empty)
        return
    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_fields(pairs: Iterable[tuple[str, object]]) -> None:
    """'key: value' lines with aligned values, skipping empty values."""
    pairs = [(k, fmt(v)) for k, v in pairs if v not in (None, "")]
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        print(f"{key + ':':<{width + 1}} {value}")


def timestamp(stamp: Timestamp) -> str:
    """UTC 'YYYY-MM-DD HH:MM:SS', or '' when unset."""
    if not stamp.seconds and not stamp.nanos:
        return ""
    when = datetime.datetime.fromtimestamp(stamp.seconds, datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def enum_name(enum_type, value: int, prefix: str) -> str:
    """JOB_STATUS_SUCCEEDED -> 'succeeded'."""
    try:
        return enum_type.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


# Metrics shown first in comparison tables, in this order; others follow alphabetically.
METRIC_ORDER = (
    "valid_reward_mean",
    "valid_greedy_reward_mean",
    "pass@1",
    "greedy_pass@1",
    "top@1",
    "top@5",
    "top@max",
    "reciprocal_rank",
)


def metric_sort_key(name: str) -> tuple[int, str]:
    if name in METRIC_ORDER:
        return (METRIC_ORDER.index(name), name)
    if name.startswith("pass@"):
        return (len(METRIC_ORDER), name)
    return (len(METRIC_ORDER) + 1, name)


def compare_metrics(
    base: Mapping[str, float], final: Mapping[str, float], warmup: Mapping[str, float] | None = None
) -> list[dict[str, object]]:
    """Rows of metric / base / [warm-up /] fine-tuned / change for a job's metric maps
    (timings left out). With a warm-up, base -> warm-up is its gain, warm-up -> fine-tuned RL's."""
    rows = []
    names = {name for name in set(base) | set(final) if not name.endswith("_seconds")}
    for name in sorted(names, key=metric_sort_key):
        before, after = base.get(name), final.get(name)
        change = None
        if before is not None and after is not None and not (math.isnan(before) or math.isnan(after)):
            change = f"{after - before:+.3f}"
        row = {"metric": name, "base": before}
        if warmup:
            row["warm-up"] = warmup.get(name)
        rows.append({**row, "fine-tuned": after, "change": change})
    return rows


def metric_columns(warmup: Mapping[str, float] | None) -> list[str]:
    return ["metric", "base", *(["warm-up"] if warmup else []), "fine-tuned", "change"]
