"""Parsed grader specs, cached by their canonical JSON and bounded in bytes.

A registered or repeated spec (a python source can be 256 kB) is validated once, not on
every Grade call. The canonical JSON is also how a spec is measured: one larger than
max_spec_bytes is refused before it is parsed. The cache keeps the most recently used
specs while their JSON takes at most `max_bytes` (and at most `max_entries` of them);
a spec larger than that is parsed but not kept.

`parse` is safe to call from several threads; run it off the event loop (a large spec
takes a while to serialise and validate).
"""

from __future__ import annotations

import collections
import json
import threading
from typing import Any

from rft_grader.domain import InvalidSpec, Issue
from rft_grader.limits import Limits
from rft_grader.spec import AnySpec, parse_spec


class SpecCache:
    def __init__(
        self,
        max_bytes: int = Limits.spec_cache_bytes,
        max_entries: int = 256,
        max_spec_bytes: int = Limits.max_spec_bytes,
        max_graders: int = Limits.max_multi_graders,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_spec_bytes = max_spec_bytes
        self.max_graders = max_graders
        self.bytes = 0
        """JSON bytes of the specs held now."""
        self._entries: collections.OrderedDict[str, tuple[AnySpec, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def parse(self, raw: Any) -> AnySpec:
        """The typed spec (from the cache when it is there), or InvalidSpec."""
        key = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        size = len(key.encode("utf-8", "surrogatepass"))
        if size > self.max_spec_bytes:
            message = f"the spec is {size} bytes of JSON; at most {self.max_spec_bytes} (max_spec_bytes)"
            raise InvalidSpec([Issue("", message)])
        with self._lock:
            if (entry := self._entries.get(key)) is not None:
                self._entries.move_to_end(key)
                return entry[0]
        spec = parse_spec(raw, self.max_graders)  # outside the lock: other threads read meanwhile
        if size <= self.max_bytes:
            with self._lock:
                if key not in self._entries:
                    self._entries[key] = (spec, size)
                    self.bytes += size
                while self.bytes > self.max_bytes or len(self._entries) > self.max_entries:
                    self.bytes -= self._entries.popitem(last=False)[1][1]
        return spec
