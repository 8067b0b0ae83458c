"""`rft models export JOB_ID --out DIR`: copy a job's fine-tuned Hugging Face model
directory, checked for config.json, safetensors weights and a tokenizer."""

from __future__ import annotations

import argparse
import pathlib
import shutil
import tempfile

from rft.learner.v1 import fine_tuning_pb2 as ft
from rft.learner.v1 import fine_tuning_pb2_grpc

from rft_cli.common import add_command, add_group, learner
from rft_cli.output import EXIT_FAILED, EXIT_OK, CliError, enum_name, print_json, print_table

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def model_problems(directory: pathlib.Path) -> list[str]:
    """What a Hugging Face model directory lacks; [] when it has config, weights and tokenizer."""
    if not directory.is_dir():
        return [f"{directory} is not a directory"]
    problems = []
    if not (directory / "config.json").is_file():
        problems.append("no config.json")
    if not list(directory.glob("*.safetensors")):
        problems.append("no *.safetensors weights")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"no tokenizer ({' / '.join(TOKENIZER_FILES)})")
    elif not (directory / "tokenizer_config.json").is_file():
        problems.append("no tokenizer_config.json")
    return problems


def copy_model(source: pathlib.Path, out: pathlib.Path, force: bool) -> list[dict[str, object]]:
    """Copy into a temporary sibling of `out`, check it, then move it into place."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise CliError(f"--out {out} exists and is not empty; choose another directory or add --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        problems = model_problems(staging)
        for path in source.rglob("*"):
            copied = staging / path.relative_to(source)
            if path.is_file() and (not copied.is_file() or copied.stat().st_size != path.stat().st_size):
                problems.append(f"{copied.name} was not copied completely")
        if problems:
            raise CliError(f"the copy in {staging} is incomplete: {'; '.join(problems)}", EXIT_FAILED)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [{"file": str(p.relative_to(out)), "bytes": p.stat().st_size} for p in sorted(out.rglob("*")) if p.is_file()]


async def export(args: argparse.Namespace, conns) -> int:
    stub = learner(args, conns, fine_tuning_pb2_grpc.FineTuningServiceStub)
    job = (await stub.GetJob(ft.GetJobRequest(job_id=args.job_id))).job
    if job.status != ft.JOB_STATUS_SUCCEEDED or not job.fine_tuned_model:
        status = enum_name(ft.JobStatus, job.status, "JOB_STATUS_")
        raise CliError(f"job {job.id} is {status}; only a succeeded job has a model to export", EXIT_FAILED)
    source = pathlib.Path(job.fine_tuned_model)
    if not source.is_dir():
        raise CliError(
            f"the learner's model directory {source} is not visible from this machine; run the export where the "
            "learner's data directory is mounted (or copy it from the learner's volume, e.g. kubectl cp)",
            EXIT_FAILED,
        )
    problems = model_problems(source)
    if problems:
        raise CliError(f"the job's model directory {source} is incomplete: {'; '.join(problems)}", EXIT_FAILED)
    out = pathlib.Path(args.out)
    files = copy_model(source, out, args.force)
    if args.json:
        print_json({"job_id": job.id, "source": str(source), "out": str(out.resolve()), "files": files})
    else:
        print_table(files, ["file", "bytes"])
        print(f"\nexported {job.id} to {out} (config.json, safetensors weights, tokenizer)")
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    actions = add_group(commands, "models", "export fine-tuned models (learner)")
    sub = add_command(
        actions,
        "export",
        export,
        "copy a succeeded job's Hugging Face model directory to DIR",
        epilog="The directory loads anywhere a Hugging Face model does, e.g. `rft-rollout serve --model DIR`.",
    )
    sub.add_argument("job_id", help="job id (ftjob-...)")
    sub.add_argument("--out", required=True, metavar="DIR", help="destination directory (must not exist or be empty)")
    sub.add_argument("--force", action="store_true", help="replace a non-empty DIR")
