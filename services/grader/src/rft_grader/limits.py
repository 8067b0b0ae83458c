"""Size limits of the grader, and the helpers that keep work and answers inside them.

A small request must not become a huge render, a huge response or a long stall of the
event loop (issue #13). `clip` and `excerpt` keep messages that echo input short.
"""

from __future__ import annotations

EXCERPT_CHARS = 200
"""Characters of echoed input (a field name, a label, a model reply) shown in a message."""


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
