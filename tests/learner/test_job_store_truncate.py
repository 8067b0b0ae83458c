"""JobStore.truncate_metrics_after on a job that has no metrics yet (every fresh job's
start): it must not fail, and later seqs still rise."""

from __future__ import annotations

from rft.learner.v1 import fine_tuning_pb2
from rft_learner.db import Database
from rft_learner.job_store import JobStore


def test_truncating_a_job_without_metrics_is_a_no_op(tmp_path) -> None:
    store = JobStore(Database(tmp_path / "learner.db"))
    job = store.create(fine_tuning_pb2.CreateJobRequest(model="m", training_file="f"), seed=0)
    store.truncate_metrics_after(job.id, -1)  # a fresh job starts with this
    store.add_metrics(job.id, 1, {"train_reward_mean": 0.5})
    first = store.metrics(job.id)[-1].seq
    store.truncate_metrics_after(job.id, 0)
    store.add_metrics(job.id, 1, {"train_reward_mean": 0.7})
    assert store.metrics(job.id)[-1].seq > first
