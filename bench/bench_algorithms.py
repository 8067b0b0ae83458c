"""Does it learn? Every RL algorithm on two tasks, several seeds, the same sample budget.

Starts the grader, rollout and learner once (local processes on loopback, as `make
demo`), then runs one job per (task, algorithm, seed) through the learner's gRPC API on
the shipped base model (models/demo-base), and prints validation greedy and sampled
reward before -> after and the wall clock, mean ± std over seeds, as a markdown table
(the one in docs/learner.md).

Tasks:
- `demo`: the demo's two-digit addition ("What is 47 + 38?"), examples/demo.
- `phrasing`: the same sums asked as "Add 47 and 38." — a phrasing the base model never
  saw and answers 0% of; every job first takes one SFT warm-up epoch on the answers
  (ReFT), so RL starts from a model that gets some right. Nothing was tuned on it.

Every job gets the same budget: `--steps` RL steps of `--batch-size` prompts ×
`--group-size` samples (the training file is cut to steps × batch_size lines, one
epoch), evaluation only before and after, and the last weights are measured (export
`last`), so the table compares the algorithms, not checkpoint selection.

`--few-shot` runs the product's few-shot case instead: 64 training examples of the demo
task, with the recipes given in FEW_SHOT_RECIPES, several seeds.

    .venv/bin/python bench/bench_algorithms.py                       # all, 3 seeds (~30 min on 2 cores)
    .venv/bin/python bench/bench_algorithms.py --algorithms grpo,dapo --seeds 1 --steps 8
    .venv/bin/python bench/bench_algorithms.py --few-shot
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time

import grpc
from google.protobuf import struct_pb2
from rft.learner.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2_grpc
from rft.learner.v1 import fine_tuning_pb2 as ft

REPO = pathlib.Path(__file__).resolve().parent.parent
ALGORITHMS = ["grpo", "dr_grpo", "rloo", "ppo", "dapo", "gspo", "cispo"]
GRADER = json.loads((REPO / "examples/demo/grader.json").read_text())  # exact match of the answer
# The demo's settings (examples/demo/job.json) for every algorithm.
COMMON = dict(group_size=8, learning_rate_multiplier=0.3, kl_coef=0.02, max_new_tokens=6, eval_samples=4)
FEW_SHOT_RECIPES = {
    "auto (every default)": {},
    "batch 8, 4 epochs (32 steps)": dict(COMMON, batch_size=8, n_epochs=4),
    "batch 16, 32 epochs (128 steps), eval every 8, patience 4": dict(
        COMMON, batch_size=16, n_epochs=32, eval_interval=8, early_stopping_patience=4
    ),
    "batch 8, 16 epochs (128 steps), eval every 8, patience 4": dict(
        COMMON, batch_size=8, n_epochs=16, eval_interval=8, early_stopping_patience=4
    ),
    "SFT warm-up 2 epochs, then batch 16, 32 epochs, eval every 8, patience 4": dict(
        COMMON,
        batch_size=16,
        n_epochs=32,
        eval_interval=8,
        early_stopping_patience=4,
        sft_warmup_epochs=2,
        sft_answer_field="answer",
    ),
}


def _demo_module():
    spec = importlib.util.spec_from_file_location("rft_demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rephrase(rows: list[dict]) -> list[dict]:
    return [{**row, "messages": [{"role": "user", "content": f"Add {row['a']} and {row['b']}."}]} for row in rows]


def task_rows(task: str) -> tuple[list[dict], list[dict]]:
    train, valid = read_jsonl(REPO / "examples/demo/train.jsonl"), read_jsonl(REPO / "examples/demo/valid.jsonl")
    return (rephrase(train), rephrase(valid)) if task == "phrasing" else (train, valid)


class Learner:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.files = files_pb2_grpc.FilesServiceStub(self.channel)
        self.jobs = fine_tuning_pb2_grpc.FineTuningServiceStub(self.channel)

    def upload(self, rows: list[dict], name: str) -> str:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()

        def requests():
            header = files_pb2.UploadFileHeader(filename=name, purpose=files_pb2.FILE_PURPOSE_FINE_TUNE)
            yield files_pb2.UploadFileRequest(header=header)
            for start in range(0, len(data), 1 << 20):
                yield files_pb2.UploadFileRequest(chunk=data[start : start + (1 << 20)])

        return self.files.UploadFile(requests(), timeout=120).file.id

    def run(self, model: str, train: str, valid: str, seed: int, hyper: dict) -> tuple[ft.Job, float]:
        spec = struct_pb2.Struct()
        spec.update(GRADER)
        hyper = dict(hyper)  # the caller's dict serves every seed
        algorithm = hyper.pop("algorithm", None)
        export = hyper.pop("export_checkpoint", None)
        params = ft.ReinforcementHyperparameters(**hyper)
        if algorithm:
            params.algorithm = ft.RlAlgorithm.Value(f"RL_ALGORITHM_{algorithm.upper()}")
        if export:
            params.export_checkpoint = ft.ExportCheckpoint.Value(f"EXPORT_CHECKPOINT_{export.upper()}")
        request = ft.CreateJobRequest(
            model=model, training_file=train, validation_file=valid, seed=seed,
            method=ft.Method(reinforcement=ft.ReinforcementMethod(grader=ft.GraderConfig(spec=spec), hyperparameters=params)),
        )  # fmt: skip
        started = time.monotonic()
        job_id = self.jobs.CreateJob(request, timeout=300).job.id
        while True:
            job = self.jobs.GetJob(ft.GetJobRequest(job_id=job_id), timeout=30).job
            if job.status in (ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED):
                break
            time.sleep(1)
        if job.status != ft.JOB_STATUS_SUCCEEDED:
            raise SystemExit(f"job {job_id} ended {ft.JobStatus.Name(job.status)}: {job.error.message}")
        return job, time.monotonic() - started


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--tasks", default="demo,phrasing")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=24, help="RL steps per job (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-minibatches", type=int, default=1, help="optimizer steps per batch (default 1)")
    parser.add_argument("--few-shot", action="store_true", help="the 64-example case instead")
    parser.add_argument("--recipes", help="few-shot recipes to run, '|'-separated names (default: all)")
    parser.add_argument("--model", default=str(REPO / "models" / "demo-base"))
    parser.add_argument("--json", help="also write every job's result to this file")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    demo = _demo_module()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="rft-bench-algorithms-"))
    grader = demo.LocalService("rft-grader", ["--data-dir", str(workdir / "grader")], workdir)
    rollout = demo.LocalService("rft-rollout", ["--model", args.model], workdir)
    learner = demo.LocalService(
        "rft-learner",
        ["--data-dir", str(workdir / "learner"), "--rollout-addresses", rollout.address,
         "--grader-address", grader.address, "--checkpoint-interval", "1000"],
        workdir,
    )  # fmt: skip
    services = [grader, rollout, learner]
    results = []
    try:
        for service in services:
            service.start()
        demo.wait_serving(services)
        client = Learner(learner.address)
        runs = []
        if args.few_shot:
            train, valid = task_rows("demo")
            few = random.Random(0).sample(train, 64)
            files = (client.upload(few, "few-shot.jsonl"), client.upload(valid, "valid.jsonl"))
            chosen = args.recipes.split("|") if args.recipes else list(FEW_SHOT_RECIPES)
            for recipe in chosen:
                hyper = FEW_SHOT_RECIPES[recipe]
                runs += [("few-shot (64)", recipe, seed, files, dict(hyper)) for seed in seeds]
        else:
            for task in args.tasks.split(","):
                train, valid = task_rows(task)
                train = train[: args.steps * args.batch_size]
                files = (client.upload(train, f"{task}-train.jsonl"), client.upload(valid, f"{task}-valid.jsonl"))
                warmup = dict(sft_warmup_epochs=1, sft_answer_field="answer") if task == "phrasing" else {}
                for algorithm in args.algorithms.split(","):
                    hyper = dict(COMMON, **warmup, algorithm=algorithm, batch_size=args.batch_size, n_epochs=1,
                                 eval_interval=0, export_checkpoint="last", num_minibatches=args.num_minibatches)  # fmt: skip
                    runs += [(task, algorithm, seed, files, hyper) for seed in seeds]
        for number, (task, name, seed, (train_id, valid_id), hyper) in enumerate(runs, start=1):
            job, seconds = client.run(args.model, train_id, valid_id, seed, hyper)
            start = job.warmup_metrics or job.base_metrics
            row = {
                "task": task, "name": name, "seed": seed, "seconds": seconds, "steps": job.trained_steps,
                "base_greedy": job.base_metrics["valid_greedy_reward_mean"],
                "base_sampled": job.base_metrics["valid_reward_mean"],
                "start_greedy": start["valid_greedy_reward_mean"],
                "final_greedy": job.final_metrics["valid_greedy_reward_mean"],
                "final_sampled": job.final_metrics["valid_reward_mean"],
            }  # fmt: skip
            results.append(row)
            print(
                f"[{number}/{len(runs)}] {task} {name} seed {seed}: greedy {row['base_greedy']:.3f} -> "
                f"{row['final_greedy']:.3f}, sampled {row['base_sampled']:.3f} -> {row['final_sampled']:.3f} "
                f"({job.trained_steps} steps, {seconds:.0f}s)",
                flush=True,
            )
    finally:
        for service in reversed(services):
            service.stop()
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))

    print(f"\n{len(seeds)} seed(s); validation reward on examples/demo/valid.jsonl (300 prompts), mean ± std\n")
    print("| task | algorithm / recipe | greedy before → after | sampled before → after | steps | wall clock (s) |")
    print("|---|---|---|---|---|---|")
    keys = dict.fromkeys((r["task"], r["name"]) for r in results)
    for task, name in keys:
        rows = [r for r in results if r["task"] == task and r["name"] == name]
        col = {k: [r[k] for r in rows] for k in rows[0]}
        print(
            f"| {task} | {name} | {summary(col['base_greedy'])} → {summary(col['final_greedy'])} | "
            f"{summary(col['base_sampled'])} → {summary(col['final_sampled'])} | {summary(col['steps'])[:5]} | "
            f"{statistics.mean(col['seconds']):.0f} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
