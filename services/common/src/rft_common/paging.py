"""Page tokens for List methods: opaque to clients, an offset inside."""

from __future__ import annotations

import base64
import json


class InvalidPageToken(ValueError):
    """The token was not produced by this server."""


def page_window(page_size: int, page_token: str, default_size: int = 50, max_size: int = 1000) -> tuple[int, int]:
    """(limit, offset) for a request; raises InvalidPageToken for a forged token."""
    if page_size < 0:
        raise InvalidPageToken("page_size must not be negative")
    limit = min(page_size or default_size, max_size)
    if not page_token:
        return limit, 0
    try:
        offset = int(json.loads(base64.urlsafe_b64decode(page_token.encode()))["offset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidPageToken(f"invalid page_token {page_token!r}") from exc
    if offset < 0:
        raise InvalidPageToken(f"invalid page_token {page_token!r}")
    return limit, offset


def next_page_token(offset: int, limit: int, returned: int) -> str:
    """Token for the page after one that returned `returned` of `limit` items."""
    if returned < limit:
        return ""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset + returned}).encode()).decode()
