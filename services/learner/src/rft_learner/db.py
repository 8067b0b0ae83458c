"""The learner's SQLite database: files, jobs, job events and metrics, checkpoints,
evaluations and saved graders.
Every write is a transaction, so a crash never leaves half a record."""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id          TEXT PRIMARY KEY,
    filename    TEXT NOT NULL,
    purpose     INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL,
    line_count  INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    path        TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_time ON files (created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    request          BLOB NOT NULL,     -- the CreateJobRequest, serialized
    status           INTEGER NOT NULL,  -- rft.learner.v1.JobStatus
    seed             INTEGER NOT NULL,
    created_at       REAL NOT NULL,
    finished_at      REAL,
    error_code       TEXT NOT NULL DEFAULT '',
    error_message    TEXT NOT NULL DEFAULT '',
    fine_tuned_model TEXT NOT NULL DEFAULT '',
    trained_steps    INTEGER NOT NULL DEFAULT 0,
    total_steps      INTEGER NOT NULL DEFAULT 0,
    base_metrics     TEXT NOT NULL DEFAULT '{}',
    final_metrics    TEXT NOT NULL DEFAULT '{}',
    warmup_metrics   TEXT NOT NULL DEFAULT '{}',
    exported_step    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS job_events (
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    time    REAL NOT NULL,
    level   INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS job_metrics (
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    step    INTEGER NOT NULL,
    time    REAL NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
-- The highest metrics seq a job ever used: truncate_metrics_after deletes the newest
-- records, and their seqs must not be handed out again (clients poll with after_seq).
CREATE TABLE IF NOT EXISTS job_metrics_seq (
    job_id  TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    high    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id      TEXT PRIMARY KEY,
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step    INTEGER NOT NULL,
    time    REAL NOT NULL,
    path    TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS checkpoints_by_job ON checkpoints (job_id, step DESC);
-- Evaluations (the HTTP API's /v1/evals): an eval is a grader and an item schema; a run
-- samples one model on one file and grades every answer; an output item is one row's result.
CREATE TABLE IF NOT EXISTS evals (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    body        TEXT NOT NULL   -- JSON: name, data_source_config, testing_criteria, metadata
);
CREATE INDEX IF NOT EXISTS evals_by_owner ON evals (owner, created_at, id);
CREATE TABLE IF NOT EXISTS eval_runs (
    id          TEXT PRIMARY KEY,
    eval_id     TEXT NOT NULL REFERENCES evals (id) ON DELETE CASCADE,
    owner       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    finished_at REAL,
    status      TEXT NOT NULL,  -- queued, in_progress, completed, failed, canceled
    request     TEXT NOT NULL,  -- JSON: name, model, data_source, metadata
    results     TEXT NOT NULL DEFAULT '{}',  -- JSON: result_counts, metrics, usage, progress
    error_code  TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS eval_runs_by_eval ON eval_runs (eval_id, created_at, id);
CREATE TABLE IF NOT EXISTS eval_output_items (
    run_id      TEXT NOT NULL REFERENCES eval_runs (id) ON DELETE CASCADE,
    item_index  INTEGER NOT NULL,  -- the row's 0-based position in the file
    created_at  REAL NOT NULL,
    status      TEXT NOT NULL,     -- pass, fail, error (the greedy answer's)
    body        TEXT NOT NULL,     -- JSON: the row, the greedy answer and the K samples, graded
    PRIMARY KEY (run_id, item_index)
);
-- Grader specs a tenant saved (the HTTP API's /v1/graders), validated when saved.
CREATE TABLE IF NOT EXISTS saved_graders (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    spec        TEXT NOT NULL   -- JSON
);
CREATE INDEX IF NOT EXISTS saved_graders_by_owner ON saved_graders (owner, created_at, id);
"""
# Columns added after a release: (table, column, definition). A database written by an
# older learner gets them on open, so upgrading keeps every job.
ADDED_COLUMNS = (
    ("jobs", "warmup_metrics", "TEXT NOT NULL DEFAULT '{}'"),
    ("jobs", "exported_step", "INTEGER NOT NULL DEFAULT 0"),
    # The tenant that owns the row; gRPC callers with the service token act as "default".
    ("files", "owner", "TEXT NOT NULL DEFAULT 'default'"),
    ("jobs", "owner", "TEXT NOT NULL DEFAULT 'default'"),
    # OpenAI's job metadata (string to string) and the model name the HTTP API was given.
    ("jobs", "metadata", "TEXT NOT NULL DEFAULT '{}'"),
    ("jobs", "model_name", "TEXT NOT NULL DEFAULT ''"),
)


class Database:
    """A thread-safe SQLite connection (WAL mode) with the learner's schema."""

    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(SCHEMA)
            for table, column, definition in ADDED_COLUMNS:
                present = {row["name"] for row in self._conn.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run statements atomically: all of them commit, or none."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def newest_first_filter(db: Database, table: str, owner: str | None, after: str) -> tuple[list[str], list]:
    """WHERE clauses (and their parameters) of a newest-first listing of `table`: only
    `owner`'s rows when given, and only rows after the row `after` in
    (created_at DESC, id DESC) order, so a cursor stays valid while rows are added."""
    where: list[str] = []
    params: list = []
    if owner is not None:
        where.append("owner = ?")
        params.append(owner)
    if after:
        rows = db.query(f"SELECT created_at, owner FROM {table} WHERE id = ?", (after,))
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            raise UnknownCursor(f"after: no such id {after!r}")
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        params += [rows[0]["created_at"], rows[0]["created_at"], after]
    return where, params


class UnknownCursor(ValueError):
    """A list's `after` cursor names no row."""
