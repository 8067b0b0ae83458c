"""Reinforcement jobs end to end through the learner's gRPC API, against live rollout
(vLLM) and grader services on a tiny model."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest
from jobs_client import (
    HAS_SEVEN,
    job_events,
    jobs_stub,
    learner_args,
    metrics_by_step,
    metrics_points,
    reinforcement_request,
    supervised_request,
    upload,
    wait_for,
    wait_for_steps,
    write_jsonl,
)
from rft.learner.v1 import fine_tuning_pb2 as ft
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_learner.trainer.rl_step import metric_is_documented
from service_process import BIN, ServiceProcess, free_port
from transformers import AutoModelForCausalLM

# A random-initialised character model emits a "7" in a sample now and then; the grader
# rewards it. RL must make it more frequent — a rise no untrained sampler shows.
SPEC = HAS_SEVEN
HYPER = dict(
    batch_size=8,
    group_size=8,
    max_new_tokens=8,
    temperature=1.0,
    learning_rate_multiplier=10.0,
    kl_coef=0.0,
    eval_interval=0,
    eval_samples=2,
)
DONE = {ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED}


def dataset(tmp_path, n_train: int = 32, n_valid: int = 8):
    rows = [
        {"messages": [{"role": "user", "content": f"Write anything #{i}"}], "digit": "7"}
        for i in range(n_train + n_valid)
    ]
    return write_jsonl(tmp_path / "train.jsonl", rows[:n_train]), write_jsonl(tmp_path / "valid.jsonl", rows[n_train:])


def start_job(channel, tiny_model, tmp_path, seed: int = 7, **overrides) -> str:
    train_path, valid_path = dataset(tmp_path)
    train, valid = upload(channel, train_path), upload(channel, valid_path)
    request = reinforcement_request(str(tiny_model), train.id, valid.id, SPEC, seed=seed, **{**HYPER, **overrides})
    return jobs_stub(channel).CreateJob(request, timeout=120).job.id


def test_reinforcement_job_raises_the_training_reward(rollout, grader_service, tiny_model, tmp_path) -> None:
    args = learner_args(tmp_path / "learner", rollout, grader_service, checkpoint_interval=4)
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        job_id = start_job(channel, tiny_model, tmp_path, n_epochs=4)  # 16 steps
        job = wait_for(channel, job_id, DONE, timeout=900)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        assert job.trained_steps == job.total_steps == 16

        steps = metrics_by_step(channel, job_id)
        rewards = [steps[s]["train_reward_mean"] for s in range(1, 17)]
        first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
        assert last > first + 0.2, f"training reward did not rise: {rewards}"
        for name in (
            "entropy",
            "clip_fraction",
            "mismatch_kl",
            "policy_version_lag",
            "weight_sync_seconds",
            "tokens_per_second",
            "step_seconds",
        ):
            assert name in steps[16], name
        assert "kl" not in steps[16]  # kl_coef 0: no reference model, no reference forward pass
        undocumented = {name for values in steps.values() for name in values if not metric_is_documented(name)}
        assert not undocumented, undocumented
        # Base and fine-tuned validation side by side.
        assert "valid_reward_mean" in job.base_metrics and "valid_reward_mean" in job.final_metrics
        assert job.final_metrics["valid_reward_mean"] > job.base_metrics["valid_reward_mean"]

        checkpoints = (
            jobs_stub(channel).ListCheckpoints(ft.ListCheckpointsRequest(job_id=job_id), timeout=10).checkpoints
        )
        assert [c.step for c in checkpoints][:2] == [16, 12]
        exported = job.fine_tuned_model
        assert exported and any(name.endswith(".safetensors") for name in __import__("os").listdir(exported))


def test_a_killed_learner_resumes_the_job_from_its_checkpoint(rollout, grader_service, tiny_model, tmp_path) -> None:
    args = learner_args(tmp_path / "learner", rollout, grader_service, checkpoint_interval=2)
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        job_id = start_job(channel, tiny_model, tmp_path, n_epochs=2)  # 8 steps
        wait_for_steps(channel, job_id, 5)
        learner.kill()
    # A torn write on the way down: the newest checkpoint's weights are cut short. The job
    # falls back to the checkpoint before it instead of failing.
    checkpoints = sorted((tmp_path / "learner" / "jobs" / job_id / "checkpoints").glob("step-*"))
    assert len(checkpoints) >= 2, checkpoints
    newest, previous = checkpoints[-1], checkpoints[-2]
    weights = newest / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        job = wait_for(channel, job_id, DONE, timeout=900)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        assert job.trained_steps == job.total_steps == 8
        messages = [
            u.event.message
            for u in jobs_stub(channel).WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True), timeout=30)
            if u.HasField("event")
        ]
        assert any("learner restarted" in m for m in messages), messages
        assert any(f"checkpoint {newest.name} is unreadable" in m for m in messages), messages
        resumed_at = int(previous.name.removeprefix("step-"))
        assert any(f"resuming from checkpoint at step {resumed_at}" in m for m in messages), messages
        # Steps trained after the checkpoint and before the kill are trained again: each
        # step's training metrics appear once, not twice.
        trained = [p.step for p in metrics_points(channel, job_id) if "train_reward_mean" in p.values]
        assert sorted(trained) == list(range(1, 9)), trained


def test_pause_and_resume_continue_exactly_like_an_uninterrupted_run(rollout, grader_service, tiny_model, tmp_path):
    args = learner_args(tmp_path / "learner", rollout, grader_service, checkpoint_interval=100)
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        stub = jobs_stub(channel)
        # With a KL term: the reference must stay the base model across the pause (it
        # was a copy of the checkpoint, which put kl back to 0 on resume).
        straight = start_job(channel, tiny_model, tmp_path, seed=11, n_epochs=2, eval_samples=1, kl_coef=0.05)
        assert wait_for(channel, straight, DONE).status == ft.JOB_STATUS_SUCCEEDED

        paused = start_job(channel, tiny_model, tmp_path, seed=11, n_epochs=2, eval_samples=1, kl_coef=0.05)
        wait_for_steps(channel, paused, 2)
        stub.PauseJob(ft.PauseJobRequest(job_id=paused), timeout=10)
        job = wait_for(channel, paused, {ft.JOB_STATUS_PAUSED, *DONE})
        assert job.status == ft.JOB_STATUS_PAUSED
        pause_step = job.trained_steps
        assert pause_step < job.total_steps
        stub.ResumeJob(ft.ResumeJobRequest(job_id=paused), timeout=10)
        assert wait_for(channel, paused, DONE).status == ft.JOB_STATUS_SUCCEEDED

        expected, got = metrics_by_step(channel, straight), metrics_by_step(channel, paused)
        for step in range(pause_step + 1, 9):
            for name in ("train_reward_mean", "loss", "kl", "response_length_mean"):
                assert got[step][name] == expected[step][name], (step, name, got[step][name], expected[step][name])
        assert expected[8]["kl"] > 0


def test_supervised_job_and_sft_warm_up_before_rl(rollout, grader_service, tiny_model, tmp_path) -> None:
    args = learner_args(tmp_path / "learner", rollout, grader_service, checkpoint_interval=100)
    rows = [
        {"messages": [{"role": "user", "content": f"Say 7 #{i}"}], "digit": "7", "answer": "777"} for i in range(16)
    ]
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        stub = jobs_stub(channel)
        train = upload(channel, write_jsonl(tmp_path / "sft.jsonl", rows))
        supervised = supervised_request(str(tiny_model), train.id, "answer", n_epochs=3, batch_size=8,
                                        learning_rate_multiplier=5)  # fmt: skip
        job_id = stub.CreateJob(supervised, timeout=60).job.id
        job = wait_for(channel, job_id, DONE)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        losses = [values["sft_loss"] for _, values in sorted(metrics_by_step(channel, job_id).items())]
        assert len(losses) == job.total_steps == 6 and losses[-1] < losses[0]

        # ReFT: SFT warm-up epochs first, then RL against the warmed-up reference.
        valid = upload(channel, write_jsonl(tmp_path / "valid.jsonl", rows[:4]))
        request = reinforcement_request(
            str(tiny_model), train.id, valid.id, SPEC, n_epochs=1, sft_warmup_epochs=1, sft_answer_field="answer",
            **{**HYPER, "batch_size": 8},
        )  # fmt: skip
        job_id = stub.CreateJob(request, timeout=120).job.id
        job = wait_for(channel, job_id, DONE)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        steps = metrics_by_step(channel, job_id)
        assert job.total_steps == 4 and "sft_loss" in steps[1] and "train_reward_mean" in steps[4]
        # "Base" is the user's model, evaluated before the warm-up (step 0); the warm-up's
        # result is evaluated at the last SFT step, so each phase's gain shows.
        assert steps[0]["valid_reward_mean"] == job.base_metrics["valid_reward_mean"]
        assert steps[2]["valid_reward_mean"] == job.warmup_metrics["valid_reward_mean"]
        assert job.warmup_metrics["valid_greedy_reward_mean"] != job.base_metrics["valid_greedy_reward_mean"]
        warnings = [
            u.event.message
            for u in stub.WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True), timeout=30)
            if u.HasField("event") and u.event.level == ft.JOB_EVENT_LEVEL_WARNING
        ]
        # The validation lines are copies of training lines: both overlaps are reported.
        assert any("4 of 4 validation examples have a prompt" in w for w in warnings), warnings
        assert any("reference answer ('answer')" in w for w in warnings), warnings


def test_grader_errors_past_the_threshold_fail_the_job_with_the_reason(
    rollout, grader_service, tiny_model, tmp_path
) -> None:
    # The first lines (which CreateJob grades as a check) have the field; the rest do not,
    # so most samples fail grading with a template error once training starts.
    rows = [{"messages": [{"role": "user", "content": f"Write anything #{i}"}]} for i in range(32)]
    for row in rows[:3]:
        row["digit"] = "7"
    args = learner_args(tmp_path / "learner", rollout, grader_service)
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        train = upload(channel, write_jsonl(tmp_path / "train.jsonl", rows))
        request = reinforcement_request(str(tiny_model), train.id, "", SPEC, **HYPER)
        job_id = jobs_stub(channel).CreateJob(request, timeout=120).job.id
        job = wait_for(channel, job_id, DONE)
        # n_epochs was left auto: CreateJob stored the value it chose (32 lines / batch 8 = 4 steps
        # per epoch, 32 epochs for 128 steps), so GetJob shows it and a resume keeps it.
        hyper = job.method.reinforcement.hyperparameters
        assert hyper.HasField("n_epochs") and hyper.n_epochs == 32 and hyper.batch_size == 8
        assert job.status == ft.JOB_STATUS_FAILED
        assert job.error.code == "grader_error_rate"
        assert "failed grading" in job.error.message and "digit" in job.error.message


def test_a_job_trains_data_parallel_on_two_trainer_ranks(rollout, grader_service, tiny_model, tmp_path) -> None:
    import psutil

    args = learner_args(tmp_path / "learner", rollout, grader_service) + ["--trainer-ranks", "2"]
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        job_id = start_job(channel, tiny_model, tmp_path, n_epochs=2, sft_warmup_epochs=1, sft_answer_field="digit")
        job = wait_for(channel, job_id, DONE)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        messages = [
            u.event.message
            for u in jobs_stub(channel).WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True), timeout=30)
            if u.HasField("event")
        ]
        assert any("data-parallel on 2 trainer ranks" in m for m in messages), messages
        steps = metrics_by_step(channel, job_id)
        assert "sft_loss" in steps[1] and "train_reward_mean" in steps[job.total_steps]
        # The extra rank is a real process of the learner, and it is gone when the job ends.
        children = psutil.Process(learner.proc.pid).children(recursive=True)
        assert not [p for p in children if "rank_worker" in " ".join(p.cmdline())]


def test_fsdp_sharded_ranks_train_checkpoint_and_resume_like_a_straight_run(
    rollout, grader_service, tiny_model, tmp_path
) -> None:
    """--trainer-sharding fsdp: policy, reference, value head and optimizer state sharded
    over 2 ranks through SFT warm-up and PPO with a KL term; the weights pushed, saved and
    exported are gathered from the shards, and a pause (checkpoint: optimizer state
    gathered, then scattered again on resume) continues like the straight run."""
    args = [*learner_args(tmp_path / "learner", rollout, grader_service, checkpoint_interval=100),
            "--trainer-ranks", "2", "--trainer-sharding", "fsdp"]  # fmt: skip
    hyper = dict(seed=5, n_epochs=1, eval_samples=1, kl_coef=0.05, algorithm=ft.RL_ALGORITHM_PPO,
                 sft_warmup_epochs=1, sft_answer_field="digit")  # fmt: skip
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        stub = jobs_stub(channel)
        straight = start_job(channel, tiny_model, tmp_path, **hyper)
        job = wait_for(channel, straight, DONE)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        assert any("with FSDP-sharded models" in m for m in job_events(channel, straight))

        paused = start_job(channel, tiny_model, tmp_path, **hyper)
        wait_for_steps(channel, paused, 5)  # 4 warm-up steps, then RL
        stub.PauseJob(ft.PauseJobRequest(job_id=paused), timeout=10)
        job = wait_for(channel, paused, {ft.JOB_STATUS_PAUSED, *DONE})
        assert job.status == ft.JOB_STATUS_PAUSED
        pause_step = job.trained_steps
        stub.ResumeJob(ft.ResumeJobRequest(job_id=paused), timeout=10)
        job = wait_for(channel, paused, DONE)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        expected, got = metrics_by_step(channel, straight), metrics_by_step(channel, paused)
        assert pause_step < job.total_steps == 8
        for step in range(pause_step + 1, 9):
            for name in ("train_reward_mean", "loss", "kl", "value_loss"):
                assert got[step][name] == pytest.approx(expected[step][name], rel=1e-5, abs=1e-7), (step, name)
    exported = AutoModelForCausalLM.from_pretrained(job.fine_tuned_model)
    assert sum(p.numel() for p in exported.parameters()) == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(str(tiny_model)).parameters()
    )


def test_a_learner_started_by_torchrun_trains_on_its_ranks_across_jobs(
    rollout, grader_service, tiny_model, tmp_path
) -> None:
    """The standard launch: `torchrun --nproc-per-node 2 --no-python rft-learner serve`.
    Rank 0 serves; rank 1 waits for jobs for the life of the service, and SIGTERM stops both."""
    torchrun = [str(BIN / "torchrun"), "--nnodes=1", "--nproc-per-node=2", f"--master-port={free_port()}",
                "--no-python"]  # fmt: skip
    args = learner_args(tmp_path / "learner", rollout, grader_service)
    learner = ServiceProcess("rft-learner", args, launcher=torchrun, env={"OMP_NUM_THREADS": "1"}, ready_timeout=120)
    with learner, learner.channel() as channel:
        for run in range(2):  # the ranks outlive a job
            (tmp_path / f"run{run}").mkdir()
            job_id = start_job(channel, tiny_model, tmp_path / f"run{run}", n_epochs=1)
            job = wait_for(channel, job_id, DONE)
            assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
            assert any("data-parallel on 2 trainer ranks" in m for m in job_events(channel, job_id))
    # torchrun itself exits 1 on SIGTERM (its SignalException); the service stopped
    # gracefully and released rank 1 rather than having it killed.
    learner.proc.wait(timeout=60)
    logs = learner.logs()
    assert "learner stopped" in logs and "trainer rank 1 released by rank 0" in logs, logs[-3000:]


def test_restarting_the_grader_and_the_rollout_does_not_fail_the_job(tiny_model, tmp_path) -> None:
    grader_args = ["--data-dir", str(tmp_path / "grader")]
    rollout_args = ["--model", str(tiny_model)]
    grader = ServiceProcess("rft-grader", grader_args).__enter__()
    rollout = ServiceProcess("rft-rollout", rollout_args, ready_timeout=300).__enter__()
    try:
        args = learner_args(tmp_path / "learner", rollout, grader) + ["--remote-patience-seconds", "300"]
        with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
            job_id = start_job(channel, tiny_model, tmp_path, n_epochs=4)  # 16 steps
            wait_for_steps(channel, job_id, 2)
            grader.kill()
            grader = grader.restarted().__enter__()
            wait_for_steps(channel, job_id, 5)
            # A restarted rollout serves its start-up weights: the learner must notice and re-send its own.
            rollout.kill()
            rollout = rollout.restarted().__enter__()
            job = wait_for(channel, job_id, DONE)
            assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
            assert job.trained_steps == 16
            # The restarted rollout came up with its start-up weights (version 0); serving a
            # later version proves the learner sent it the trained weights again.
            with rollout.channel() as rollout_channel:
                info = rollout_pb2_grpc.RolloutServiceStub(rollout_channel).GetModelInfo(
                    rollout_pb2.GetModelInfoRequest(), timeout=30
                )
            assert info.policy_version >= 1
    finally:
        rollout.stop()
        grader.stop()


def test_overlapped_generation_trains_on_one_version_old_samples(rollout, grader_service, tiny_model, tmp_path) -> None:
    args = learner_args(tmp_path / "learner", rollout, grader_service)
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        job_id = start_job(channel, tiny_model, tmp_path, n_epochs=2, max_staleness=1)  # 8 steps
        job = wait_for(channel, job_id, DONE)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        steps = metrics_by_step(channel, job_id)
        # Step 1 samples the current weights; every later batch was generated while the
        # previous step trained, so it comes from the policy one version behind.
        assert steps[1]["policy_version_lag"] == 0
        assert [steps[s]["policy_version_lag"] for s in range(2, 9)] == [1] * 7


def test_early_stopping_and_best_checkpoint_export(rollout, grader_service, tiny_model, tmp_path) -> None:
    # Greedy sampling and a learning rate near 0: validation never improves on the first
    # evaluation, so the job stops after `patience` more and exports that first checkpoint.
    args = learner_args(tmp_path / "learner", rollout, grader_service, checkpoint_interval=100)
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        job_id = start_job(
            channel, tiny_model, tmp_path, n_epochs=4, temperature=0.0, learning_rate_multiplier=1e-6,
            eval_interval=1, early_stopping_patience=2,
        )  # fmt: skip
        job = wait_for(channel, job_id, DONE)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        assert job.trained_steps == job.total_steps == 3  # of 16
        assert any("early stopping at step 3" in m for m in job_events(channel, job_id))
        assert job.exported_step == 1
        steps = metrics_by_step(channel, job_id)
        assert job.final_metrics["valid_reward_mean"] == steps[1]["valid_reward_mean"]
        checkpoints = jobs_stub(channel).ListCheckpoints(ft.ListCheckpointsRequest(job_id=job_id), timeout=10)
        assert {c.step for c in checkpoints.checkpoints} >= {1, 2, 3}
        import safetensors.torch

        exported = safetensors.torch.load_file(f"{job.fine_tuned_model}/model.safetensors")
        best = safetensors.torch.load_file(
            next(c.path for c in checkpoints.checkpoints if c.step == 1) + "/model/model.safetensors"
        )
        assert exported.keys() == best.keys() and all(exported[k].equal(best[k]) for k in best)


def _fill(disk: pathlib.Path, leave_bytes: int) -> pathlib.Path:
    """Fill `disk` up, then give back `leave_bytes`: room for the database, not a checkpoint."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    # One reservation, never a full disk in between: the learner's own small writes keep working.
    with open(filler, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(0, free - leave_bytes))
    return filler


def test_a_full_data_disk_pauses_the_job_and_resume_finishes_it(rollout, grader_service, tiny_model, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(disk)], capture_output=True)
    except OSError as exc:  # no mount(8) on this machine
        pytest.skip(f"a small tmpfs is needed to fill a disk: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs is needed to fill a disk: {mounted.stderr.decode().strip()}")
    try:
        args = learner_args(disk / "learner", rollout, grader_service, checkpoint_interval=2)
        with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
            job_id = start_job(channel, tiny_model, tmp_path, n_epochs=2)  # 8 steps, a checkpoint every 2
            wait_for_steps(channel, job_id, 1)
            filler = _fill(disk, leave_bytes=6 << 20)  # a checkpoint of the tiny model needs ~9 MB
            job = wait_for(channel, job_id, {ft.JOB_STATUS_PAUSED, *DONE})
            assert job.status == ft.JOB_STATUS_PAUSED, job.error
            replay = jobs_stub(channel).WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True), timeout=30)
            messages = []
            for update in replay:  # a paused job's stream stays open: read the replay, up to the job's state
                if update.HasField("job"):
                    replay.cancel()
                    break
                messages.append(update.event.message)
            assert any("data disk" in m and "is full" in m for m in messages), messages
            filler.unlink()
            jobs_stub(channel).ResumeJob(ft.ResumeJobRequest(job_id=job_id), timeout=10)
            job = wait_for(channel, job_id, DONE)
            assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
            assert job.trained_steps == job.total_steps == 8
            trained = [p.step for p in metrics_points(channel, job_id) if "train_reward_mean" in p.values]
            assert sorted(trained) == list(range(1, 9)), trained
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
