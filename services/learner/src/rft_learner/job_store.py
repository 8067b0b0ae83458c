"""Persistence of jobs, their events, metrics and checkpoints (SQLite)."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

from rft.learner.v1 import fine_tuning_pb2

from rft_learner.db import Database, newest_first_filter

JobStatus = fine_tuning_pb2.JobStatus
FINISHED = (
    fine_tuning_pb2.JOB_STATUS_SUCCEEDED,
    fine_tuning_pb2.JOB_STATUS_FAILED,
    fine_tuning_pb2.JOB_STATUS_CANCELLED,
)


class JobNotFound(Exception):
    """No job has this id."""


@dataclasses.dataclass
class JobRecord:
    id: str
    request: fine_tuning_pb2.CreateJobRequest
    status: int
    seed: int
    created_at: float
    finished_at: float | None = None
    error_code: str = ""
    error_message: str = ""
    fine_tuned_model: str = ""
    trained_steps: int = 0
    total_steps: int = 0
    base_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    final_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    warmup_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    exported_step: int = 0
    owner: str = "default"
    """Tenant the job belongs to."""
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    """OpenAI's job metadata: up to 16 string pairs, stored as given."""
    model_name: str = ""
    """The model name the HTTP API was given (a catalogue name or a fine-tuned model id);
    empty for jobs created over gRPC with a directory."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclasses.dataclass(frozen=True)
class EventRecord:
    seq: int
    time: float
    level: int
    message: str


@dataclasses.dataclass(frozen=True)
class MetricsRecord:
    seq: int
    step: int
    time: float
    values: dict[str, float]


@dataclasses.dataclass(frozen=True)
class CheckpointRecord:
    id: str
    job_id: str
    step: int
    time: float
    path: str
    metrics: dict[str, float]


def _job(row) -> JobRecord:
    request = fine_tuning_pb2.CreateJobRequest.FromString(row["request"])
    return JobRecord(
        id=row["id"],
        request=request,
        status=row["status"],
        seed=row["seed"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        fine_tuned_model=row["fine_tuned_model"],
        trained_steps=row["trained_steps"],
        total_steps=row["total_steps"],
        base_metrics=json.loads(row["base_metrics"]),
        final_metrics=json.loads(row["final_metrics"]),
        warmup_metrics=json.loads(row["warmup_metrics"]),
        exported_step=row["exported_step"],
        owner=row["owner"],
        metadata=json.loads(row["metadata"]),
        model_name=row["model_name"],
    )


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        request: fine_tuning_pb2.CreateJobRequest,
        seed: int,
        owner: str = "default",
        metadata: dict[str, str] | None = None,
        model_name: str = "",
    ) -> JobRecord:
        job = JobRecord(
            id="ftjob-" + uuid.uuid4().hex[:24],
            request=request,
            status=fine_tuning_pb2.JOB_STATUS_VALIDATING_FILES,
            seed=seed,
            created_at=time.time(),
            owner=owner,
            metadata=dict(metadata or {}),
            model_name=model_name,
        )
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (id, request, status, seed, created_at, owner, metadata, model_name)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    request.SerializeToString(),
                    job.status,
                    seed,
                    job.created_at,
                    owner,
                    json.dumps(job.metadata),
                    model_name,
                ),
            )
        return job

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        """The job; with `owner`, another tenant's job is reported as missing."""
        rows = self.db.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            raise JobNotFound(f"no job with id {job_id!r}")
        return _job(rows[0])

    def list(self, limit: int, offset: int = 0, owner: str | None = None, after: str = "") -> list[JobRecord]:
        """Newest first; `after` (a job id) starts after that job, as a cursor."""
        where, params = newest_first_filter(self.db, "jobs", owner, after)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.db.query(sql + " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", (*params, limit, offset))
        return [_job(r) for r in rows]

    def with_status(self, *statuses: int, owner: str | None = None) -> list[JobRecord]:
        marks = ",".join("?" * len(statuses))
        sql = f"SELECT * FROM jobs WHERE status IN ({marks})"
        params: tuple = statuses
        if owner is not None:
            sql, params = sql + " AND owner = ?", (*statuses, owner)
        rows = self.db.query(sql + " ORDER BY created_at", params)
        return [_job(r) for r in rows]

    def count_by_status(self) -> dict[int, int]:
        rows = self.db.query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        return {row["status"]: row["n"] for row in rows}

    def update(self, job_id: str, **fields) -> JobRecord:
        """Set columns of a job; dict values are stored as JSON."""
        columns, values = [], []
        for name, value in fields.items():
            columns.append(f"{name} = ?")
            values.append(json.dumps(value) if isinstance(value, dict) else value)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE jobs SET {', '.join(columns)} WHERE id = ?", (*values, job_id))
        return self.get(job_id)

    def add_event(self, job_id: str, level: int, message: str) -> EventRecord:
        with self.db.transaction() as conn:
            (seq,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = ?", (job_id,)
            ).fetchone()
            event = EventRecord(seq, time.time(), level, message)
            conn.execute("INSERT INTO job_events VALUES (?, ?, ?, ?, ?)", (job_id, seq, event.time, level, message))
        return event

    def add_metrics(self, job_id: str, step: int, values: dict[str, float]) -> MetricsRecord:
        with self.db.transaction() as conn:
            (seq,) = conn.execute(
                "SELECT MAX(COALESCE((SELECT MAX(seq) FROM job_metrics WHERE job_id = ?1), 0),"
                " COALESCE((SELECT high FROM job_metrics_seq WHERE job_id = ?1), 0)) + 1",
                (job_id,),
            ).fetchone()
            record = MetricsRecord(seq, step, time.time(), values)
            conn.execute(
                "INSERT INTO job_metrics VALUES (?, ?, ?, ?, ?)", (job_id, seq, step, record.time, json.dumps(values))
            )
        return record

    def events(self, job_id: str, after_seq: int = 0) -> list[EventRecord]:
        rows = self.db.query(
            "SELECT seq, time, level, message FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
            (job_id, after_seq),
        )
        return [EventRecord(r["seq"], r["time"], r["level"], r["message"]) for r in rows]

    def metrics(self, job_id: str, after_seq: int = 0, limit: int = -1) -> list[MetricsRecord]:
        """Records after `after_seq`, oldest first; at most `limit` (-1: all)."""
        rows = self.db.query(
            "SELECT seq, step, time, metrics FROM job_metrics WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit),
        )
        return [MetricsRecord(r["seq"], r["step"], r["time"], json.loads(r["metrics"])) for r in rows]

    def truncate_metrics_after(self, job_id: str, step: int) -> None:
        """Drop metrics logged after `step` (they are recomputed when a job resumes); the
        records that replace them get new seqs, after every seq handed out before."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO job_metrics_seq (job_id, high) SELECT ?1, MAX(seq) FROM job_metrics WHERE job_id = ?1"
                " AND seq IS NOT NULL GROUP BY job_id ON CONFLICT (job_id) DO UPDATE SET high = MAX(high, excluded.high)",
                (job_id,),
            )
            conn.execute("DELETE FROM job_metrics WHERE job_id = ? AND step > ?", (job_id, step))

    def add_checkpoint(self, job_id: str, step: int, path: str, metrics: dict[str, float]) -> CheckpointRecord:
        record = CheckpointRecord(f"ckpt-{job_id}-step-{step}", job_id, step, time.time(), path, metrics)
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)",
                (record.id, job_id, step, record.time, path, json.dumps(metrics)),
            )
        return record

    def checkpoints(self, job_id: str, limit: int = 1000, offset: int = 0) -> list[CheckpointRecord]:
        rows = self.db.query(
            "SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step DESC LIMIT ? OFFSET ?", (job_id, limit, offset)
        )
        return [
            CheckpointRecord(r["id"], r["job_id"], r["step"], r["time"], r["path"], json.loads(r["metrics"]))
            for r in rows
        ]
