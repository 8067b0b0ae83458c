"""Registered graders per tenant, in SQLite under data_dir (survives restarts).

Every query is scoped by tenant: an id of another tenant is simply not found, so
no code path can leak whether it exists. SQLite calls run on one dedicated thread
(the connection is used from that thread only), never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import json
import pathlib
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from rft_grader.domain import AlreadyExists, NotFound

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS graders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order: "newest first" without clock ties
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    spec TEXT NOT NULL,
    create_time TEXT NOT NULL,
    UNIQUE (tenant, name)
);
CREATE INDEX IF NOT EXISTS graders_by_tenant ON graders (tenant, seq);
"""


@dataclasses.dataclass(frozen=True)
class GraderRecord:
    id: str
    tenant: str
    name: str
    type: str
    spec: dict[str, Any]
    create_time: datetime.datetime


def _record(row: tuple) -> GraderRecord:
    grader_id, tenant, name, kind, spec, created = row
    return GraderRecord(grader_id, tenant, name, kind, json.loads(spec), datetime.datetime.fromisoformat(created))


class Registry:
    """`async with Registry(path) as registry`: the tenant-scoped grader store."""

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def __aenter__(self) -> Registry:
        def open_db() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a registered grader must survive a crash
            self._db.executescript(_SCHEMA)

        await self._run(open_db)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def create(self, tenant: str, name: str, kind: str, spec: dict[str, Any]) -> GraderRecord:
        record = GraderRecord(
            id=f"grader-{uuid.uuid4().hex}",
            tenant=tenant,
            name=name,
            type=kind,
            spec=spec,
            create_time=datetime.datetime.now(datetime.timezone.utc),
        )

        def insert() -> None:
            try:
                self._db.execute(
                    "INSERT INTO graders (id, tenant, name, type, spec, create_time) VALUES (?, ?, ?, ?, ?, ?)",
                    (record.id, tenant, name, kind, json.dumps(spec), record.create_time.isoformat()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"tenant {tenant!r} already has a grader named {name!r}") from None

        await self._run(insert)
        return record

    async def get(self, tenant: str, grader_id: str) -> GraderRecord:
        def select() -> tuple | None:
            return self._db.execute(
                "SELECT id, tenant, name, type, spec, create_time FROM graders WHERE tenant = ? AND id = ?",
                (tenant, grader_id),
            ).fetchone()

        row = await self._run(select)
        if row is None:
            raise NotFound(f"grader {grader_id!r} not found")
        return _record(row)

    async def list(self, tenant: str, limit: int, offset: int) -> list[GraderRecord]:
        """The tenant's graders, newest first."""

        def select() -> list[tuple]:
            return self._db.execute(
                "SELECT id, tenant, name, type, spec, create_time FROM graders WHERE tenant = ? "
                "ORDER BY seq DESC LIMIT ? OFFSET ?",
                (tenant, limit, offset),
            ).fetchall()

        return [_record(row) for row in await self._run(select)]

    async def delete(self, tenant: str, grader_id: str) -> None:
        def remove() -> int:
            return self._db.execute("DELETE FROM graders WHERE tenant = ? AND id = ?", (tenant, grader_id)).rowcount

        if await self._run(remove) == 0:
            raise NotFound(f"grader {grader_id!r} not found")
