"""Evaluations, their runs and output items, and saved graders, in the learner's SQLite.

Every row has an owner (the tenant); every read and write here takes the owner and treats
another tenant's row as missing, as the file and job stores do. Bodies are JSON: the
stored object is what the HTTP API returns, less the fields computed on the way out."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any

from rft_learner.db import Database, UnknownCursor

# Run states (OpenAI's names); the last three are final.
QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELED = "queued", "in_progress", "completed", "failed", "canceled"
FINAL = (COMPLETED, FAILED, CANCELED)
INTERRUPTED = "interrupted"
"""Error code of a run the learner stopped (or lost) in the middle of: create it again."""


class NotFound(LookupError):
    """No row with this id belongs to this owner."""


class TooManyRuns(Exception):
    """The owner already has its most runs queued or in progress."""

    def __init__(self, active: int) -> None:
        super().__init__(active)
        self.active = active


@dataclasses.dataclass
class EvalRecord:
    id: str
    owner: str
    created_at: float
    updated_at: float
    body: dict[str, Any]


@dataclasses.dataclass
class RunRecord:
    id: str
    eval_id: str
    owner: str
    created_at: float
    finished_at: float | None
    status: str
    request: dict[str, Any]
    results: dict[str, Any]
    error_code: str
    error_message: str


@dataclasses.dataclass
class OutputItemRecord:
    run_id: str
    index: int
    created_at: float
    status: str
    body: dict[str, Any]

    @property
    def id(self) -> str:
        return output_item_id(self.run_id, self.index)


@dataclasses.dataclass
class SavedGrader:
    id: str
    owner: str
    name: str
    created_at: float
    spec: dict[str, Any]


def output_item_id(run_id: str, index: int) -> str:
    return f"outputitem_{run_id.removeprefix('evalrun_')}_{index}"


def output_item_index(run_id: str, item_id: str) -> int | None:
    """The row index in an output item id of this run, or None for anything else: only
    ASCII digits as `output_item_id` writes them (no "²", "٣", "+1", "01", no 20-digit
    number SQLite cannot bind), so a crafted id is a 400/404, never a 500."""
    prefix = output_item_id(run_id, 0)[:-1]
    digits = item_id.removeprefix(prefix)
    if not item_id.startswith(prefix) or not (digits.isascii() and digits.isdecimal()) or len(digits) > 15:
        return None
    return int(digits) if digits == str(int(digits)) else None


def _page_sql(
    db: Database, table: str, where: list[str], params: list, after: str, order: str, time_column: str = "created_at"
) -> tuple[str, list]:
    """WHERE ... ORDER BY ... of a cursor page in (time, id) order: rows after the row
    `after` (which must match `where` itself), so a cursor stays valid while rows are added."""
    descending = order == "desc"
    if after:
        rows = db.query(
            f"SELECT {time_column} AS t FROM {table} WHERE id = ? AND " + " AND ".join(where), (after, *params)
        )
        if not rows:
            raise UnknownCursor(f"after: no such id {after!r}")
        cmp = "<" if descending else ">"
        where = [*where, f"({time_column} {cmp} ? OR ({time_column} = ? AND id {cmp} ?))"]
        params = [*params, rows[0]["t"], rows[0]["t"], after]
    direction = "DESC" if descending else "ASC"
    return " WHERE " + " AND ".join(where) + f" ORDER BY {time_column} {direction}, id {direction}", params


class EvalStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- evals -------------------------------------------------------------------------------
    def create_eval(self, owner: str, body: dict[str, Any]) -> EvalRecord:
        now = time.time()
        record = EvalRecord("eval_" + uuid.uuid4().hex[:24], owner, now, now, body)
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO evals (id, owner, created_at, updated_at, body) VALUES (?, ?, ?, ?, ?)",
                (record.id, owner, now, now, json.dumps(body)),
            )
        return record

    def get_eval(self, eval_id: str, owner: str) -> EvalRecord:
        rows = self.db.query("SELECT * FROM evals WHERE id = ? AND owner = ?", (eval_id, owner))
        if not rows:
            raise NotFound(eval_id)
        return _eval(rows[0])

    def update_eval(self, eval_id: str, owner: str, changes: dict[str, Any]) -> EvalRecord:
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT * FROM evals WHERE id = ? AND owner = ?", (eval_id, owner)).fetchall()
            if not rows:
                raise NotFound(eval_id)
            record = _eval(rows[0])
            record.body.update(changes)
            record.updated_at = time.time()
            conn.execute(
                "UPDATE evals SET body = ?, updated_at = ? WHERE id = ?",
                (json.dumps(record.body), record.updated_at, eval_id),
            )
        return record

    def list_evals(self, owner: str, limit: int, after: str = "", order: str = "asc", order_by: str = "created_at"):
        column = "updated_at" if order_by == "updated_at" else "created_at"
        sql, params = _page_sql(self.db, "evals", ["owner = ?"], [owner], after, order, column)
        return [_eval(r) for r in self.db.query("SELECT * FROM evals" + sql + " LIMIT ?", (*params, limit))]

    def delete_eval(self, eval_id: str, owner: str) -> None:
        """Deletes the eval with its runs and their output items."""
        with self.db.transaction() as conn:
            if not conn.execute("DELETE FROM evals WHERE id = ? AND owner = ?", (eval_id, owner)).rowcount:
                raise NotFound(eval_id)

    # -- runs --------------------------------------------------------------------------------
    def create_run(
        self,
        eval_id: str,
        owner: str,
        request: dict[str, Any],
        results: dict[str, Any],
        max_active: int | None = None,
    ) -> RunRecord:
        """A queued run; TooManyRuns when the owner already has `max_active` runs queued or
        in progress (counted in the same transaction, so racing creates cannot pass it)."""
        record = RunRecord(
            "evalrun_" + uuid.uuid4().hex[:24], eval_id, owner, time.time(), None, QUEUED, request, results, "", ""
        )
        with self.db.transaction() as conn:
            if not conn.execute("SELECT 1 FROM evals WHERE id = ? AND owner = ?", (eval_id, owner)).fetchall():
                raise NotFound(eval_id)
            if max_active is not None:
                active = conn.execute(
                    "SELECT COUNT(*) FROM eval_runs WHERE owner = ? AND status IN (?, ?)", (owner, QUEUED, IN_PROGRESS)
                ).fetchone()[0]
                if active >= max_active:
                    raise TooManyRuns(active)
            conn.execute(
                "INSERT INTO eval_runs (id, eval_id, owner, created_at, status, request, results)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.id, eval_id, owner, record.created_at, QUEUED, json.dumps(request), json.dumps(results)),
            )
        return record

    def get_run(self, eval_id: str, run_id: str, owner: str) -> RunRecord:
        rows = self.db.query(
            "SELECT * FROM eval_runs WHERE id = ? AND eval_id = ? AND owner = ?", (run_id, eval_id, owner)
        )
        if not rows:
            raise NotFound(run_id)
        return _run(rows[0])

    def list_runs(self, eval_id: str, owner: str, limit: int, after: str = "", order: str = "asc", status: str = ""):
        where, params = ["eval_id = ?", "owner = ?"], [eval_id, owner]
        if status:
            where.append("status = ?")
            params.append(status)
        sql, params = _page_sql(self.db, "eval_runs", where, params, after, order)
        return [_run(r) for r in self.db.query("SELECT * FROM eval_runs" + sql + " LIMIT ?", (*params, limit))]

    def runs_with_status(self, *statuses: str, eval_id: str | None = None) -> list[RunRecord]:
        sql = f"SELECT * FROM eval_runs WHERE status IN ({','.join('?' * len(statuses))})"
        params: tuple = statuses
        if eval_id is not None:
            sql, params = sql + " AND eval_id = ?", (*statuses, eval_id)
        return [_run(r) for r in self.db.query(sql + " ORDER BY created_at", params)]

    def set_run_status(
        self, run_id: str, status: str, results: dict[str, Any] | None = None, error: tuple[str, str] | None = None
    ) -> bool:
        """Move an unfinished run to `status`; False when the run is gone or already final
        (a cancel that won the race keeps its state)."""
        sets, params = ["status = ?"], [status]
        if results is not None:
            sets.append("results = ?")
            params.append(json.dumps(results))
        if error is not None:
            sets += ["error_code = ?", "error_message = ?"]
            params += list(error)
        if status in FINAL:
            sets.append("finished_at = ?")
            params.append(time.time())
        marks = ",".join("?" * len(FINAL))
        with self.db.transaction() as conn:
            changed = conn.execute(
                f"UPDATE eval_runs SET {', '.join(sets)} WHERE id = ? AND status NOT IN ({marks})",
                (*params, run_id, *FINAL),
            ).rowcount
        return bool(changed)

    def delete_run(self, eval_id: str, run_id: str, owner: str) -> None:
        with self.db.transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM eval_runs WHERE id = ? AND eval_id = ? AND owner = ?", (run_id, eval_id, owner)
            ).rowcount
            if not deleted:
                raise NotFound(run_id)

    def fail_unfinished(self, message: str) -> int:
        """At start-up: runs a previous learner process left queued or in progress can never
        finish; they fail with code `interrupted`. Returns how many."""
        with self.db.transaction() as conn:
            return conn.execute(
                "UPDATE eval_runs SET status = ?, error_code = ?, error_message = ?, finished_at = ?"
                " WHERE status IN (?, ?)",
                (FAILED, INTERRUPTED, message, time.time(), QUEUED, IN_PROGRESS),
            ).rowcount

    # -- output items ------------------------------------------------------------------------
    def add_output_items(self, run_id: str, items: list[tuple[int, str, dict[str, Any]]]) -> bool:
        """(index, status, body) rows of one run, written together; False (nothing written)
        when the run is gone."""
        now = time.time()
        with self.db.transaction() as conn:
            if not conn.execute("SELECT 1 FROM eval_runs WHERE id = ?", (run_id,)).fetchall():
                return False  # deleted meanwhile
            conn.executemany(
                "INSERT OR REPLACE INTO eval_output_items (run_id, item_index, created_at, status, body)"
                " VALUES (?, ?, ?, ?, ?)",
                [(run_id, index, now, status, json.dumps(body)) for index, status, body in items],
            )
        return True

    def list_output_items(
        self, run_id: str, limit: int, after_index: int | None = None, order: str = "asc", status: str = ""
    ) -> list[OutputItemRecord]:
        """A run's items by row index (the run's ownership is checked by the caller)."""
        where, params = ["run_id = ?"], [run_id]
        if status:
            where.append("status = ?")
            params.append(status)
        if after_index is not None:
            where.append("item_index " + ("<" if order == "desc" else ">") + " ?")
            params.append(after_index)
        direction = "DESC" if order == "desc" else "ASC"
        sql = "SELECT * FROM eval_output_items WHERE " + " AND ".join(where) + f" ORDER BY item_index {direction}"
        return [_item(r) for r in self.db.query(sql + " LIMIT ?", (*params, limit))]

    def get_output_item(self, run_id: str, index: int) -> OutputItemRecord:
        rows = self.db.query("SELECT * FROM eval_output_items WHERE run_id = ? AND item_index = ?", (run_id, index))
        if not rows:
            raise NotFound(output_item_id(run_id, index))
        return _item(rows[0])

    # -- saved graders -----------------------------------------------------------------------
    def save_grader(self, owner: str, name: str, spec: dict[str, Any]) -> SavedGrader:
        record = SavedGrader("grader_" + uuid.uuid4().hex[:24], owner, name, time.time(), spec)
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO saved_graders (id, owner, name, created_at, spec) VALUES (?, ?, ?, ?, ?)",
                (record.id, owner, name, record.created_at, json.dumps(spec)),
            )
        return record

    def get_grader(self, grader_id: str, owner: str) -> SavedGrader:
        rows = self.db.query("SELECT * FROM saved_graders WHERE id = ? AND owner = ?", (grader_id, owner))
        if not rows:
            raise NotFound(grader_id)
        return _grader(rows[0])

    def list_graders(self, owner: str, limit: int, after: str = "", order: str = "desc") -> list[SavedGrader]:
        sql, params = _page_sql(self.db, "saved_graders", ["owner = ?"], [owner], after, order)
        return [_grader(r) for r in self.db.query("SELECT * FROM saved_graders" + sql + " LIMIT ?", (*params, limit))]

    def delete_grader(self, grader_id: str, owner: str) -> None:
        with self.db.transaction() as conn:
            if not conn.execute("DELETE FROM saved_graders WHERE id = ? AND owner = ?", (grader_id, owner)).rowcount:
                raise NotFound(grader_id)


def _eval(row) -> EvalRecord:
    return EvalRecord(row["id"], row["owner"], row["created_at"], row["updated_at"], json.loads(row["body"]))


def _run(row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        eval_id=row["eval_id"],
        owner=row["owner"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        status=row["status"],
        request=json.loads(row["request"]),
        results=json.loads(row["results"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
    )


def _item(row) -> OutputItemRecord:
    return OutputItemRecord(row["run_id"], row["item_index"], row["created_at"], row["status"], json.loads(row["body"]))


def _grader(row) -> SavedGrader:
    return SavedGrader(row["id"], row["owner"], row["name"], row["created_at"], json.loads(row["spec"]))
