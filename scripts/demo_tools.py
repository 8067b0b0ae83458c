"""The agent demo: 3-digit addition with a calculator tool, end to end on real services.

1. Warm-up model: the tiny preset (scripts/build_base_model.py) trained on tool traces
   ("What is 734 + 589?" -> <tool_call> add -> tool result -> answer; loss on the model's
   tokens only) and stopped early, at a mean loss of --stop-loss, so that it calls the
   tool right some of the time (scripts/build_tool_model.py --task sum3).
2. Services: grader, rollout (vLLM) with an MCP calculator server over stdio
   (examples/agents/calculator_mcp.py), learner.
3. Without tools: the warm-up model answers the validation questions in one turn (no
   tool runs): sampled accuracy.
4. RL job with max_turns=2 and tool_servers=["calc"]: the learner evaluates with tools at
   the start (the warm-up model) and the end; GRPO on the episodes in between.
5. Summary (printed and written to WORKDIR/summary.json).

    python scripts/demo_tools.py --workdir /tmp/rft-agent-demo
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import build_tool_model  # noqa: E402
from demo import LocalService, wait_serving  # noqa: E402

HYPER = {
    "n_epochs": 10,
    "batch_size": 16,
    "group_size": 8,
    "learning_rate_multiplier": 0.2,
    "kl_coef": 0.0,
    "max_new_tokens": 128,
    "temperature": 1.0,
    "eval_interval": 20,
    "eval_samples": 4,
    "max_turns": 2,
}
SPEC = {
    "type": "string_check",
    "name": "answer",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def problems(seed: int, n_train: int, n_valid: int) -> tuple[list[dict], list[dict]]:
    """Disjoint train / valid problems a + b with 500 <= a, b <= 999 (either order counts
    as the same problem), as OpenAI RFT JSONL rows."""
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    rows = []
    while len(rows) < n_train + n_valid:
        a, b = rng.randrange(500, 1000), rng.randrange(500, 1000)
        if (min(a, b), max(a, b)) in seen:
            continue
        seen.add((min(a, b), max(a, b)))
        rows.append({"messages": [{"role": "user", "content": f"What is {a} + {b}?"}], "answer": str(a + b)})
    return rows[:n_train], rows[n_train:]


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def accuracy_without_tools(address: str, rows: list[dict], samples: int) -> float:
    """Share of sampled one-turn answers (no tools run) equal to the reference."""
    import grpc
    from rft.common.v1 import common_pb2
    from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        prompts = [
            rollout_pb2.Prompt(
                chat=rollout_pb2.ChatPrompt(messages=[common_pb2.ChatMessage(**m) for m in row["messages"]])
            )
            for row in rows
        ]
        request = rollout_pb2.GenerateRequest(
            prompts=prompts, sampling=rollout_pb2.SamplingParams(n=samples, temperature=1.0, max_tokens=96, seed=0)
        )
        response = rollout_pb2_grpc.RolloutServiceStub(channel).Generate(request, timeout=600)
    right = sum(
        sample.text.strip() == row["answer"]
        for row, result in zip(rows, response.results, strict=True)
        for sample in result.samples
    )
    return right / (len(rows) * samples)


def run_job(learner: LocalService, model: str, train: pathlib.Path, valid: pathlib.Path, hyper: dict, seed: int):
    """Create the job over gRPC, wait for it, return (job, metrics by step)."""
    import grpc
    from google.protobuf import struct_pb2
    from rft.learner.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2_grpc
    from rft.learner.v1 import fine_tuning_pb2 as ft

    with grpc.insecure_channel(learner.address) as channel:
        files = files_pb2_grpc.FilesServiceStub(channel)

        def upload(path: pathlib.Path) -> str:
            data = path.read_bytes()
            header = files_pb2.UploadFileHeader(filename=path.name, purpose=files_pb2.FILE_PURPOSE_FINE_TUNE)
            messages = [files_pb2.UploadFileRequest(header=header)]
            messages += [files_pb2.UploadFileRequest(chunk=data[i : i + 65536]) for i in range(0, len(data), 65536)]
            return files.UploadFile(iter(messages), timeout=120).file.id

        spec = struct_pb2.Struct()
        spec.update(SPEC)
        request = ft.CreateJobRequest(
            model=model,
            training_file=upload(train),
            validation_file=upload(valid),
            seed=seed,
            method=ft.Method(
                reinforcement=ft.ReinforcementMethod(
                    grader=ft.GraderConfig(spec=spec),
                    hyperparameters=ft.ReinforcementHyperparameters(tool_servers=["calc"], **hyper),
                )
            ),
        )
        jobs = fine_tuning_pb2_grpc.FineTuningServiceStub(channel)
        job = jobs.CreateJob(request, timeout=120).job
        print(f"  job {job.id}")
        done = {ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED}
        while job.status not in done:
            time.sleep(5)
            job = jobs.GetJob(ft.GetJobRequest(job_id=job.id), timeout=30).job
            print(f"\r  step {job.trained_steps}/{job.total_steps}   ", end="", flush=True)
        print()
        steps: dict[int, dict[str, float]] = {}
        for update in jobs.WatchJob(ft.WatchJobRequest(job_id=job.id, replay=True), timeout=60):
            if update.HasField("metrics"):
                steps.setdefault(update.metrics.step, {}).update(update.metrics.values)
        return job, steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/rft-agent-demo", help="logs, data, models")
    parser.add_argument("--model", help="warm-up model directory (default: build one in the work directory)")
    parser.add_argument("--stop-loss", type=float, default=0.03, help="warm-up stops below this mean loss")
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-valid", type=int, default=64)
    parser.add_argument("--n-epochs", type=int, help="override the job's n_epochs")
    parser.add_argument("--lr-multiplier", type=float, help="override the job's learning_rate_multiplier")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model = args.model
    if model is None:
        print("1/5 warm-up: the tiny preset trained on tool traces, stopped early")
        model = str(workdir / "warmup-model")
        build_tool_model.train(
            pathlib.Path(model), 1500, batch_size=16, lr=3e-3, seed=0, pairs=None, task="sum3", stop_loss=args.stop_loss
        )
    warmup_seconds = time.monotonic() - started
    train_rows, valid_rows = problems(args.seed, args.n_train, args.n_valid)
    train = write_jsonl(workdir / "train.jsonl", train_rows)
    valid = write_jsonl(workdir / "valid.jsonl", valid_rows)
    tools = workdir / "tool-servers.json"
    calculator = str(REPO / "examples" / "agents" / "calculator_mcp.py")
    tools.write_text(json.dumps({"servers": [{"name": "calc", "kind": "mcp_stdio", "target": sys.executable,
                                              "args": [calculator]}]}))  # fmt: skip
    hyper = dict(HYPER, n_epochs=args.n_epochs or HYPER["n_epochs"])
    if args.lr_multiplier is not None:
        hyper["learning_rate_multiplier"] = args.lr_multiplier

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    grader = LocalService("rft-grader", ["--data-dir", str(workdir / "grader")], workdir)
    rollout = LocalService(
        "rft-rollout",
        ["--model", model, "--tool-servers-file", str(tools), "--max-model-len", "512", "--warmup-requests", "8"],
        workdir,
    )
    learner = LocalService(
        "rft-learner",
        ["--data-dir", str(workdir / "learner"), "--rollout-addresses", rollout.address,
         "--grader-address", grader.address, "--checkpoint-interval", "1000"],
        workdir,
    )  # fmt: skip
    services = [grader, rollout, learner]
    try:
        print(f"2/5 starting grader, rollout (vLLM + the MCP calculator) and learner; logs in {workdir}")
        for service in services:
            service.start()
        wait_serving(services)
        print("3/5 the warm-up model without tools (one turn, no tool runs)")
        without = accuracy_without_tools(rollout.address, valid_rows, hyper["eval_samples"])
        print(f"  valid accuracy without tools: {without:.3f}")
        print("4/5 RL with the calculator (evaluations with tools at the start and the end)")
        job_started = time.monotonic()
        job, steps = run_job(learner, model, train, valid, hyper, args.seed)
        job_seconds = time.monotonic() - job_started
    finally:
        for service in reversed(services):
            service.stop()
    evaluated = sorted(step for step, values in steps.items() if "valid_reward_mean" in values)
    before, after = steps[evaluated[0]], steps[evaluated[-1]]
    summary = {
        "job": job.id,
        "status": int(job.status),
        "error": job.error.message if job.HasField("error") else "",
        "steps": job.trained_steps,
        "valid_accuracy_without_tools_warmup": without,
        "valid_accuracy_with_tools_warmup": before["valid_reward_mean"],
        "valid_accuracy_with_tools_after_rl": after["valid_reward_mean"],
        "valid_greedy_with_tools_warmup": before.get("valid_greedy_reward_mean"),
        "valid_greedy_with_tools_after_rl": after.get("valid_greedy_reward_mean"),
        "tool_calls_mean_first_step": steps.get(1, {}).get("tool_calls_mean"),
        "tool_error_rate_first_step": steps.get(1, {}).get("tool_error_rate"),
        "warmup_seconds": round(warmup_seconds, 1),
        "job_seconds": round(job_seconds, 1),
        "valid_accuracy_with_tools_by_step": {s: steps[s]["valid_reward_mean"] for s in evaluated},
        "hyperparameters": hyper,
        "train_reward_by_step": {
            s: v["train_reward_mean"] for s, v in sorted(steps.items()) if "train_reward_mean" in v
        },
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print("5/5 results")
    print(json.dumps({k: v for k, v in summary.items() if k != "train_reward_by_step"}, indent=2))


if __name__ == "__main__":
    main()
