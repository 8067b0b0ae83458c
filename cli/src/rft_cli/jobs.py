"""`rft jobs create|list|get|watch|cancel|pause|resume` and `rft checkpoints list`."""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys

from google.protobuf import struct_pb2
from rft.learner.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2_grpc
from rft.learner.v1 import fine_tuning_pb2 as ft

from rft_cli import watch
from rft_cli.common import add_command, add_group, learner
from rft_cli.files import upload_file
from rft_cli.inputs import read_json_object
from rft_cli.output import (
    EXIT_OK,
    CliError,
    compare_metrics,
    enum_name,
    metric_columns,
    print_fields,
    print_json,
    print_table,
    timestamp,
    to_dict,
)
from rft_cli.services import Connections, ServiceError, Stub


def _choices(enum_type, prefix: str) -> dict[str, int]:
    """A proto enum's values by the lower-case names the learner uses ('dr_grpo')."""
    return {name.removeprefix(prefix).lower(): value for name, value in enum_type.items() if value}


# (field, choices, help) for the enum hyperparameters; unset means the learner's default.
CHOICE_HYPERPARAMETERS = (
    ("algorithm", _choices(ft.RlAlgorithm, "RL_ALGORITHM_"), "policy-gradient algorithm (default grpo)"),
    ("kl_estimator", _choices(ft.KlEstimator, "KL_ESTIMATOR_"), "per-token KL estimator (default k3)"),
    (
        "rollout_correction",
        _choices(ft.RolloutCorrection, "ROLLOUT_CORRECTION_"),
        "trainer/rollout mismatch correction: truncated or masked importance sampling (default tis)",
    ),
    (
        "rollout_correction_level",
        _choices(ft.ImportanceLevel, "IMPORTANCE_LEVEL_"),
        "one importance weight per token or per sequence (default token)",
    ),
    (
        "loss_aggregation",
        _choices(ft.LossAggregation, "LOSS_AGGREGATION_"),
        "how per-token losses are averaged (default: the algorithm's)",
    ),
    (
        "export_checkpoint",
        _choices(ft.ExportCheckpoint, "EXPORT_CHECKPOINT_"),
        "export the best checkpoint by valid_reward_mean or the last weights (default best)",
    ),
)

# (field, type, help). Bounds are checked by the learner, which names the field it refuses.
SHARED_HYPERPARAMETERS = (
    ("n_epochs", int, "passes over the training file (default: reinforcement auto, supervised 3)"),
    ("batch_size", int, "prompts per RL step / examples per SFT step (default: reinforcement auto, supervised 16)"),
    (
        "learning_rate_multiplier",
        float,
        "multiplier of the base learning rate 1e-3 (default: reinforcement auto, supervised 1.0)",
    ),
    ("lora_rank", int, "train only LoRA adapters of this rank; 0 trains every weight (default 0)"),
    ("lora_alpha", float, "LoRA scaling numerator, the adapter is scaled by alpha / rank (default 2 * rank)"),
)
RL_HYPERPARAMETERS = (
    ("compute_multiplier", float, "scales the samples per prompt, as OpenAI's (default 1.0)"),
    ("eval_interval", int, "steps between validation runs; 0 = only at start and end (default auto: steps / 8)"),
    ("eval_samples", int, "samples per validation prompt, the k of pass@k (default 4)"),
    ("group_size", int, "samples per prompt, the GRPO / RLOO group (default 8)"),
    ("kl_coef", float, "KL penalty to the reference model (default 0.02)"),
    ("clip_range", float, "PPO clip range epsilon (default 0.2)"),
    ("max_new_tokens", int, "maximum tokens per sample (default 64)"),
    ("temperature", float, "sampling temperature of training rollouts (default 1.0)"),
    ("max_staleness", int, "policy versions a sample may lag: generation runs up to N steps ahead (default 0)"),
    ("max_grader_error_fraction", float, "fraction of samples that may fail grading before the job fails (0.1)"),
    ("sft_warmup_epochs", int, "SFT epochs on --sft-answer-field before RL, as in ReFT (default 0)"),
    ("ppo_epochs", int, "passes over each batch, as TRL's num_iterations (default 1)"),
    ("num_minibatches", int, "minibatches per pass, one optimizer step each (default 1)"),
    ("clip_range_high", float, "upper clip epsilon, DAPO's clip-higher (default clip_range; dapo/cispo 0.28)"),
    ("gae_gamma", float, "ppo: GAE discount (default 1.0)"),
    ("gae_lambda", float, "ppo: GAE lambda (default 0.95)"),
    ("value_clip_range", float, "ppo: value clip around the values before the update; 0 = off (default 0.2)"),
    ("value_loss_coef", float, "ppo: weight of the value loss (default 0.1)"),
    ("rollout_correction_cap", float, "cap of the rollout correction's importance weight, > 1 (default 2.0)"),
    ("dynamic_sampling_max_rounds", int, "most generation rounds per step under dynamic sampling (default 3)"),
    ("overlong_buffer", int, "tokens before max_new_tokens where a length penalty ramps up; 0 = off (dapo: 1/4)"),
    ("overlong_penalty", float, "length penalty at max_new_tokens (default 1.0)"),
    ("early_stopping_patience", int, "stop after N evaluations without a better valid_reward_mean; 0 = never (auto)"),
)
RL_ONLY_OPTIONS = (
    "grader_spec",
    "grader_id",
    "grader_address",
    "tenant",
    "sft_answer_field",
    "dynamic_sampling",
    *(name for name, _, _ in CHOICE_HYPERPARAMETERS),
)
STATUS_PREFIX = "JOB_STATUS_"


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def job_status(job: ft.Job) -> str:
    return enum_name(ft.JobStatus, job.status, STATUS_PREFIX)


def job_method(job: ft.Job) -> str:
    kind = job.method.WhichOneof("method") or "?"
    if kind == "reinforcement":
        algorithm = job.method.reinforcement.hyperparameters.algorithm
        return f"rl/{enum_name(ft.RlAlgorithm, algorithm, 'RL_ALGORITHM_') if algorithm else 'grpo'}"
    return "sft" if kind == "supervised" else kind


def job_row(job: ft.Job) -> dict[str, object]:
    return {
        "id": job.id,
        "status": job_status(job),
        "method": job_method(job),
        "model": pathlib.PurePath(job.model).name or job.model,
        "steps": f"{job.trained_steps}/{job.total_steps}" if job.total_steps else "-",
        "created": timestamp(job.create_time),
        "fine_tuned_model": job.fine_tuned_model,
    }


JOB_COLUMNS = ["id", "status", "method", "model", "steps", "created", "fine_tuned_model"]


def print_job(job: ft.Job) -> None:
    rl = job.method.HasField("reinforcement")
    hyper = job.method.reinforcement.hyperparameters if rl else job.method.supervised.hyperparameters
    settings = " ".join(f"{field.name}={value}" for field, value in hyper.ListFields())
    grader_text = ""
    if rl:
        grader = job.method.reinforcement.grader
        if grader.WhichOneof("source") == "grader_id":
            grader_text = grader.grader_id
        else:
            grader_text = f"inline {grader.spec.fields['type'].string_value or '?'} spec"
        if grader.service_address:
            grader_text += f" at {grader.service_address}"
    print_fields(
        [
            ("id", job.id),
            ("status", job_status(job)),
            ("model", job.model),
            ("method", job_method(job)),
            ("grader", grader_text),
            ("hyperparameters", settings),
            ("training_file", job.training_file),
            ("validation_file", job.validation_file),
            ("seed", job.seed),
            ("suffix", job.suffix),
            ("created", timestamp(job.create_time)),
            ("finished", timestamp(job.finish_time)),
            ("steps", f"{job.trained_steps}/{job.total_steps}"),
            ("fine_tuned_model", job.fine_tuned_model),
            ("error", f"{job.error.code}: {job.error.message}" if job.error.code else ""),
        ]
    )
    if job.base_metrics or job.final_metrics:
        print()
        print_table(
            compare_metrics(job.base_metrics, job.final_metrics, job.warmup_metrics), metric_columns(job.warmup_metrics)
        )


def jobs_stub(args: argparse.Namespace, conns: Connections) -> Stub:
    return learner(args, conns, fine_tuning_pb2_grpc.FineTuningServiceStub)


# -- create ------------------------------------------------------------------------------
def _hyperparameters(args: argparse.Namespace, fields) -> dict[str, object]:
    return {name: getattr(args, name) for name, _, _ in fields if getattr(args, name) is not None}


def _check_usage(args: argparse.Namespace) -> None:
    if args.method == "supervised":
        if not args.answer_field:
            raise CliError("--method supervised needs --answer-field F (the dataset field with the reference answer)")
        rl_only = [flag(n) for n, _, _ in RL_HYPERPARAMETERS if getattr(args, n) is not None]
        rl_only += [flag(n) for n in RL_ONLY_OPTIONS if getattr(args, n)]
        if rl_only:
            raise CliError(f"{', '.join(rl_only)} only apply to --method reinforcement")
        return
    if args.answer_field:
        raise CliError(
            "--answer-field is for --method supervised; for an SFT warm-up before RL give "
            "--sft-warmup-epochs N --sft-answer-field F"
        )
    if not (args.grader_spec or args.grader_id):
        raise CliError("--method reinforcement needs a grader: --grader-spec FILE.json or --grader-id ID")


def build_method(args: argparse.Namespace) -> ft.Method:
    if args.method == "supervised":
        return ft.Method(
            supervised=ft.SupervisedMethod(
                answer_field=args.answer_field,
                hyperparameters=ft.SupervisedHyperparameters(**_hyperparameters(args, SHARED_HYPERPARAMETERS)),
            )
        )
    grader = ft.GraderConfig(service_address=args.grader_address or "", tenant=args.tenant or "")
    if args.grader_spec:
        spec = struct_pb2.Struct()
        spec.update(read_json_object(args.grader_spec, "grader spec"))
        grader.spec.CopyFrom(spec)
    else:
        grader.grader_id = args.grader_id
    hyper = ft.ReinforcementHyperparameters(
        **_hyperparameters(args, SHARED_HYPERPARAMETERS + RL_HYPERPARAMETERS),
        sft_answer_field=args.sft_answer_field or "",
        **{name: choices[getattr(args, name)] for name, choices, _ in CHOICE_HYPERPARAMETERS if getattr(args, name)},
    )
    if args.dynamic_sampling is not None:
        hyper.dynamic_sampling = args.dynamic_sampling == "on"
    return ft.Method(reinforcement=ft.ReinforcementMethod(grader=grader, hyperparameters=hyper))


async def _file_id(args: argparse.Namespace, conns: Connections, value: str, uploaded: list[str]) -> str:
    """A file id as given, or the id of a local JSONL path uploaded first (appended to `uploaded`)."""
    if not value or not pathlib.Path(value).is_file():
        return value
    stored = (await upload_file(args, conns, value)).file
    uploaded.append(stored.id)
    print(f"uploaded {value} as {stored.id} ({stored.line_count} examples)", file=sys.stderr)
    return stored.id


async def create(args: argparse.Namespace, conns: Connections) -> int:
    _check_usage(args)
    method = build_method(args)  # reads the spec file before anything is uploaded
    model = pathlib.Path(args.model)
    uploaded: list[str] = []
    try:
        request = ft.CreateJobRequest(
            # A local directory is sent as an absolute path; anything else is the learner's to resolve.
            model=str(model.resolve()) if model.is_dir() else args.model,
            training_file=await _file_id(args, conns, args.training_file, uploaded),
            validation_file=await _file_id(args, conns, args.validation_file or "", uploaded),
            method=method,
            seed=args.seed,
            suffix=args.suffix or "",
        )
        job = (await jobs_stub(args, conns).CreateJob(request)).job
    except ServiceError:
        # The job was refused: remove the files this command uploaded for it.
        files_stub = learner(args, conns, files_pb2_grpc.FilesServiceStub)
        for file_id in uploaded:
            with contextlib.suppress(ServiceError):
                await files_stub.DeleteFile(files_pb2.DeleteFileRequest(file_id=file_id))
        raise
    if args.watch:
        if not args.json:
            print(f"created {job.id}; watching (Ctrl-C stops watching, not the job)", file=sys.stderr)
        return await watch.watch_job(args, jobs_stub(args, conns), job.id)
    if args.json:
        print_json({"job": to_dict(job)})
    else:
        print_table([job_row(job)], JOB_COLUMNS)
        print(f"\nfollow it with: rft jobs watch {job.id}")
    return EXIT_OK


# -- the other job commands ------------------------------------------------------------------
async def list_jobs(args: argparse.Namespace, conns: Connections) -> int:
    response = await jobs_stub(args, conns).ListJobs(ft.ListJobsRequest(page_size=args.limit))
    if args.json:
        print_json(response)
    else:
        print_table([job_row(j) for j in response.jobs], JOB_COLUMNS, empty="(no jobs)")
    return EXIT_OK


async def get(args: argparse.Namespace, conns: Connections) -> int:
    job = (await jobs_stub(args, conns).GetJob(ft.GetJobRequest(job_id=args.job_id))).job
    if args.json:
        print_json({"job": to_dict(job)})
    else:
        print_job(job)
    return EXIT_OK


async def _transition(args: argparse.Namespace, conns: Connections, rpc: str, request_class, verb: str) -> int:
    job = (await getattr(jobs_stub(args, conns), rpc)(request_class(job_id=args.job_id))).job
    if args.json:
        print_json({"job": to_dict(job)})
    else:
        print(f"{verb} {job.id}: status {job_status(job)}")
    return EXIT_OK


async def cancel(args: argparse.Namespace, conns: Connections) -> int:
    return await _transition(args, conns, "CancelJob", ft.CancelJobRequest, "cancel requested for")


async def pause(args: argparse.Namespace, conns: Connections) -> int:
    return await _transition(args, conns, "PauseJob", ft.PauseJobRequest, "pause requested for")


async def resume(args: argparse.Namespace, conns: Connections) -> int:
    return await _transition(args, conns, "ResumeJob", ft.ResumeJobRequest, "resumed")


async def watch_command(args: argparse.Namespace, conns: Connections) -> int:
    return await watch.watch_job(args, jobs_stub(args, conns), args.job_id)


async def list_checkpoints(args: argparse.Namespace, conns: Connections) -> int:
    request = ft.ListCheckpointsRequest(job_id=args.job_id, page_size=args.limit)
    response = await jobs_stub(args, conns).ListCheckpoints(request)
    if args.json:
        print_json(response)
        return EXIT_OK
    rows = [
        {
            "id": c.id,
            "step": c.step,
            "created": timestamp(c.create_time),
            "valid_reward": c.metrics.get("valid_reward_mean"),
            "pass@1": c.metrics.get("pass@1"),
            "path": c.path,
        }
        for c in response.checkpoints
    ]
    print_table(rows, ["id", "step", "created", "valid_reward", "pass@1", "path"], empty="(no checkpoints yet)")
    return EXIT_OK


# -- parsers ---------------------------------------------------------------------------------
CREATE_EPILOG = """\
examples:
  rft jobs create --model models/base --training-file train.jsonl --validation-file valid.jsonl \\
      --grader-spec grader.json --group-size 8 --watch
  rft jobs create --model models/base --training-file file-abc --method supervised --answer-field answer

--training-file / --validation-file take a file id or a local JSONL path (uploaded first).
Reinforcement hyperparameters left out are "auto": the learner picks batch size, epochs,
learning rate, evaluation interval and early stopping from the dataset size and the model
(docs/learner.md) and reports its choice as a job event; others take the learner's defaults; out-of-range values are refused
(exit 1) with the field named. With --watch the exit code is the job's (0 succeeded,
1 failed or cancelled)."""


def _add_create(actions: argparse._SubParsersAction) -> None:
    sub = add_command(actions, "create", create, "create a fine-tuning job", epilog=CREATE_EPILOG)
    sub.add_argument("--model", required=True, metavar="DIR", help="base model: a Hugging Face model directory")
    sub.add_argument("--training-file", required=True, metavar="ID|PATH", help="training file id or JSONL path")
    sub.add_argument("--validation-file", metavar="ID|PATH", help="validation file id or JSONL path")
    sub.add_argument("--method", choices=["reinforcement", "supervised"], default="reinforcement")
    sub.add_argument("--answer-field", metavar="F", help="supervised: dataset field with the reference answer")
    grader = sub.add_argument_group("grader (reinforcement)")
    source = grader.add_mutually_exclusive_group()
    source.add_argument("--grader-spec", metavar="FILE.json", help="grader spec in OpenAI's grader JSON format")
    source.add_argument("--grader-id", metavar="ID", help="id of a grader registered with `rft graders register`")
    grader.add_argument("--grader-address", metavar="HOST:PORT", help="grader service the learner should use")
    grader.add_argument("--tenant", help="tenant the grader runs for (default: 'default')")
    hyper = sub.add_argument_group("hyperparameters")
    for name, kind, text in SHARED_HYPERPARAMETERS + RL_HYPERPARAMETERS:
        hyper.add_argument(flag(name), dest=name, type=kind, metavar="N" if kind is int else "X", help=text)
    hyper.add_argument("--sft-answer-field", metavar="F", help="dataset field with the answer for the SFT warm-up")
    for name, choices, text in CHOICE_HYPERPARAMETERS:
        hyper.add_argument(flag(name), dest=name, choices=sorted(choices), help=text)
    hyper.add_argument(
        "--dynamic-sampling", choices=["on", "off"], help="drop prompts whose samples all score the same (dapo: on)"
    )
    sub.add_argument("--seed", type=int, default=0, help="seed; 0 means the learner's fixed default (42)")
    sub.add_argument("--suffix", help="suffix of the fine-tuned model's name")
    sub.add_argument("--watch", action="store_true", help="follow the job until it ends (as `rft jobs watch`)")


def register(commands: argparse._SubParsersAction) -> None:
    actions = add_group(commands, "jobs", "create, follow and control fine-tuning jobs (learner)")
    _add_create(actions)
    sub = add_command(actions, "list", list_jobs, "list jobs, newest first")
    sub.add_argument("--limit", type=int, default=20, help="how many to show (default %(default)s)")
    for name, handler, text in (
        ("get", get, "show one job: settings, progress, base vs fine-tuned metrics"),
        ("cancel", cancel, "stop a job for good (after the current step)"),
        ("pause", pause, "pause a queued or running job after a checkpoint"),
        ("resume", resume, "resume a paused job from its last checkpoint"),
    ):
        sub = add_command(actions, name, handler, text)
        sub.add_argument("job_id", help="job id (ftjob-...)")
    sub = add_command(
        actions,
        "watch",
        watch_command,
        "follow a job live: progress bar with step, rewards and ETA, then base vs fine-tuned",
        epilog="Replays the job's history first. Plain lines when stdout is not a terminal; JSON lines\n"
        "with --json. Exit code: 0 succeeded, 1 failed or cancelled (the error is printed).",
    )
    sub.add_argument("job_id", help="job id (ftjob-...)")

    actions = add_group(commands, "checkpoints", "list a job's checkpoints (learner)")
    sub = add_command(actions, "list", list_checkpoints, "list a job's checkpoints with their metrics, newest first")
    sub.add_argument("job_id", help="job id (ftjob-...)")
    sub.add_argument("--limit", type=int, default=50, help="how many to show (default %(default)s)")
