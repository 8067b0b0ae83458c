"""Size limits of the grader, and the helpers that keep work and answers inside them.

A small request must not become a huge render, a huge response or a long stall of the
event loop (issue #13). `Limits` holds the values an operator may tune (GraderConfig
takes its defaults from here). `clip` and `excerpt` keep messages that echo input short.
"""

from __future__ import annotations

import dataclasses

EXCERPT_CHARS = 200
"""Characters of echoed input (a field name, a label, a model reply) shown in a message."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """The grader's size limits; docs/graders.md ("Limits") lists what exceeding each gives."""

    max_batch_items: int = 4096
    max_text_chars: int = 1_000_000
    max_spec_bytes: int = 1024**2
    max_multi_graders: int = 16
    spec_cache_bytes: int = 64 * 1024**2


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


def excerpt(text: str, max_chars: int = EXCERPT_CHARS) -> str:
    """How echoed input appears in a message: the repr of its first `max_chars`
    characters, and how many more there were."""
    if len(text) <= max_chars:
        return repr(text)
    return f"{text[:max_chars]!r}{_more(len(text) - max_chars)}"


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
