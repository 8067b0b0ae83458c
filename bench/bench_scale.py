"""Scale ladder: what one RL step costs at ~1M, ~10M and ~100M parameters, and where.

For each size it builds a randomly initialised Qwen2 model with the demo's character
tokenizer (scripts/build_base_model.py: "1m" is the "tiny" preset), starts the grader,
a rollout serving that model (float32) and a learner (its default --micro-batch-tokens)
as local processes on loopback, as `make demo` does, and runs one GRPO job through the
learner's gRPC API: `--batch-size` prompts x `--group-size` samples of at most
`--max-new-tokens` tokens per step, kl_coef 0, a string_check grader, no validation set.
The first `--warmup-steps` steps are not measured. Per size it prints, from the
learner's own step metrics (rl_step.METRIC_NAMES):

- s/step, the median over measured steps of step_seconds, and its parts
  (generate_seconds, grade_seconds, train_seconds, weight_sync_seconds; "other" is the
  rest of step_seconds);
- trained tokens/s: train_tokens (completion tokens) / train_seconds;
- weight sync: model bytes (model.safetensors, float32 = the dtype the rollout serves)
  and GB/s = bytes / weight_sync_seconds;
- peak RSS (VmHWM) of the learner process and of the rollout process tree (the gRPC
  server and vLLM's engine-core child), summed over processes, read just before the
  services stop;
- the floor: the same batch (train_samples sequences of prompt + mean completion length)
  as one plain forward + backward + AdamW step of the Hugging Face model in fp32 in this
  process (median of `--steps` after one warm-up), and ours / floor for the update
  (train_seconds) and for the whole step.

Then a flat-memory check: `rft_learner.trainer.updates.rl_update` on the 10M model, one
fresh process per batch size (8 .. 256 sequences), with `--memory-budget` micro-batch
tokens and with 0 (no micro-batching) for contrast; its peak RSS should stay roughly flat
with the budget and grow with the batch without it. A third column runs the budgeted case
with MALLOC_MMAP_THRESHOLD_=65536, so that glibc hands freed tensors back to the kernel at
once: the difference to the first column is memory the allocator keeps, not live tensors.

Markdown tables go to stdout (the CPU model in the header); `--json` also writes every
number. The default ladder took 9 minutes on 2 CPU cores with a load average of about 2
from other work; on a busier machine it takes much longer.

    .venv/bin/python bench/bench_scale.py                         # 1m, 10m, 100m + memory check
    .venv/bin/python bench/bench_scale.py --sizes 1m --steps 2 --memory-batches 8,32
    .venv/bin/python bench/bench_scale.py --sizes 200m --no-memory --json out.json
    .venv/bin/python bench/bench_scale.py --sizes 100m --no-memory --weight-sync collective
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import gc
import importlib.util
import inspect
import json
import math
import os
import pathlib
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
# Ladder names -> scripts/build_base_model.py presets.
SIZES = {"1m": "tiny", "10m": "10m", "100m": "100m", "200m": "200m"}
DEFAULT_SIZES = "1m,10m,100m"
# Measured steps per size when --steps is not given (100M+ steps take long on 2 cores).
DEFAULT_STEPS = {"1m": 8, "10m": 6, "100m": 3, "200m": 2}
# A grader that some random-weight samples pass: the answer's last digit appears in the text.
GRADER = {
    "type": "string_check",
    "name": "digit",
    "input": "{{sample.output_text}}",
    "reference": "{{item.digit}}",
    "operation": "like",
}


def _load(name: str, path: pathlib.Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def set_torch_threads(threads: int) -> None:
    """As the learner's --torch-threads: 0 leaves torch's default (one per core). On a
    machine busy with other work, one thread per core lets every parallel op wait for a
    descheduled thread: a 1M-parameter training step measured 0.05-4 s with 2 threads at
    a load average of 3.6, and 0.06-0.09 s with 1."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_average() -> str:
    """/proc/loadavg's 1, 5 and 15 minute load (other work on the machine skews timings)."""
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def proc_status_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in KiB (VmHWM, VmRSS); 0 when the process is gone."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """The process and every process below it (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in pathlib.Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def tree_peak_rss(pid: int) -> dict:
    """VmHWM of the process tree: the sum over processes (an upper bound of the tree's
    peak: the processes' peaks need not coincide, and shared pages count in each)."""
    per = {p: proc_status_kib(p, "VmHWM") for p in descendants(pid)}
    return {"total_bytes": 1024 * sum(per.values()), "main_bytes": 1024 * per.get(pid, 0),
            "processes": [{"command": command_line(p), "peak_bytes": 1024 * v} for p, v in per.items()]}  # fmt: skip


def tree_rss(pid: int) -> int:
    """Bytes resident now (VmRSS) summed over the process tree."""
    return 1024 * sum(proc_status_kib(p, "VmRSS") for p in descendants(pid))


def command_line(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return ""


def demo_rows(count: int) -> list[dict]:
    """`count` two-digit sums phrased as in the demo; the grader looks for the sum's last digit."""
    rng = random.Random(0)
    rows = []
    for _ in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"messages": [{"role": "user", "content": f"What is {a} + {b}?"}], "digit": str((a + b) % 10)})
    return rows


def prompt_length(model_dir: pathlib.Path) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer.apply_chat_template(demo_rows(1)[0]["messages"], add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def parameter_count(model_dir: pathlib.Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())  # noqa: SIM118


# ---------------------------------------------------------------- the RL steps


def run_job(learner_address: str, model: str, rows: list[dict], args, on_poll=None) -> list[dict]:
    """One GRPO job; returns its RL steps' metrics in step order. `on_poll(job)` runs
    every half second while the job runs."""
    import grpc
    from google.protobuf import struct_pb2
    from rft.learner.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2_grpc
    from rft.learner.v1 import fine_tuning_pb2 as ft

    channel = grpc.insecure_channel(learner_address, options=[("grpc.max_receive_message_length", 64 << 20)])
    files = files_pb2_grpc.FilesServiceStub(channel)
    jobs = fine_tuning_pb2_grpc.FineTuningServiceStub(channel)
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    header = files_pb2.UploadFileHeader(filename="scale.jsonl", purpose=files_pb2.FILE_PURPOSE_FINE_TUNE)
    uploads = [files_pb2.UploadFileRequest(header=header), files_pb2.UploadFileRequest(chunk=data)]
    train_id = files.UploadFile(iter(uploads), timeout=120).file.id
    spec = struct_pb2.Struct()
    spec.update(GRADER)
    params = ft.ReinforcementHyperparameters(
        n_epochs=1, batch_size=args.batch_size, group_size=args.group_size, learning_rate_multiplier=0.1,
        kl_coef=0.0, max_new_tokens=args.max_new_tokens, eval_interval=0, algorithm=ft.RL_ALGORITHM_GRPO,
        export_checkpoint=ft.EXPORT_CHECKPOINT_LAST,
    )  # fmt: skip
    request = ft.CreateJobRequest(
        model=model, training_file=train_id, seed=1,
        method=ft.Method(reinforcement=ft.ReinforcementMethod(grader=ft.GraderConfig(spec=spec), hyperparameters=params)),
    )  # fmt: skip
    job_id = jobs.CreateJob(request, timeout=300).job.id
    while True:
        job = jobs.GetJob(ft.GetJobRequest(job_id=job_id), timeout=30).job
        if job.status in (ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED):
            break
        if on_poll is not None:
            on_poll(job)
        time.sleep(0.5)
    if job.status != ft.JOB_STATUS_SUCCEEDED:
        raise SystemExit(f"job {job_id} ended {ft.JobStatus.Name(job.status)}: {job.error.message}")
    steps: dict[int, dict] = {}
    for update in jobs.WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True), timeout=120):
        if update.HasField("metrics") and "step_seconds" in update.metrics.values:
            steps.setdefault(update.metrics.step, {}).update(dict(update.metrics.values))
    channel.close()
    return [steps[s] for s in sorted(steps)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ladder_rung(size: str, steps: int, workdir: pathlib.Path, args) -> dict:
    builder = _load("build_base_model", REPO / "scripts" / "build_base_model.py")
    demo = _load("rft_demo", REPO / "scripts" / "demo.py")
    model_dir = workdir / f"model-{size}"
    load_before = load_average()
    started = time.monotonic()
    builder.build_model(model_dir, SIZES[size], seed=0)
    model_bytes = (model_dir / "model.safetensors").stat().st_size
    n_params = parameter_count(model_dir)
    print(f"[{size}] built {n_params / 1e6:.1f}M parameters in {time.monotonic() - started:.0f}s", flush=True)

    run_dir = workdir / f"services-{size}"
    run_dir.mkdir()
    grader = demo.LocalService("rft-grader", ["--data-dir", str(run_dir / "grader")], run_dir)
    rollout = demo.LocalService("rft-rollout", ["--model", str(model_dir)], run_dir)
    learner = demo.LocalService(
        "rft-learner",
        ["--data-dir", str(run_dir / "learner"), "--rollout-addresses", rollout.address,
         "--grader-address", grader.address, "--checkpoint-interval", "1000", "--torch-threads", str(args.torch_threads),
         "--weight-sync", args.weight_sync],
        run_dir,
    )  # fmt: skip
    services = [grader, rollout, learner]
    try:
        for service in services:
            service.start()
        demo.wait_serving(services)
        started = time.monotonic()
        total = args.warmup_steps + steps
        sampled = {"learner": 0, "rollout": 0}

        def sample(job) -> None:
            # Resident memory while RL steps run (before the final checkpoint and export).
            if job.trained_steps < total:
                sampled["learner"] = max(sampled["learner"], tree_rss(learner.proc.pid))
                sampled["rollout"] = max(sampled["rollout"], tree_rss(rollout.proc.pid))

        metrics = run_job(learner.address, str(model_dir), demo_rows(total * args.batch_size), args, sample)
        job_seconds = time.monotonic() - started
        learner_rss = tree_peak_rss(learner.proc.pid)
        rollout_rss = tree_peak_rss(rollout.proc.pid)
    finally:
        for service in reversed(services):
            service.stop()
    measured = metrics[args.warmup_steps :]
    if not measured:
        raise SystemExit(f"[{size}] the job recorded {len(metrics)} RL steps; none left to measure")

    def col(name: str) -> float:
        return median([m.get(name, float("nan")) for m in measured])

    row = {
        "size": size, "preset": SIZES[size], "parameters": n_params, "model_bytes": model_bytes,
        "measured_steps": len(measured), "job_seconds": job_seconds,
        **{name: col(name) for name in ("step_seconds", "generate_seconds", "grade_seconds", "train_seconds",
                                        "weight_sync_seconds", "train_samples", "train_tokens",
                                        "response_length_mean", "tokens_per_second")},
        "trained_tokens_per_second": median([m["train_tokens"] / m["train_seconds"] for m in measured]),
        "weight_sync_gb_per_second": median([model_bytes / m["weight_sync_seconds"] / 1e9 for m in measured]),
        "learner_peak_rss": learner_rss, "rollout_peak_rss": rollout_rss, "steps": metrics,
        "learner_sampled_rss_bytes": sampled["learner"], "rollout_sampled_rss_bytes": sampled["rollout"],
        "step_seconds_min": min(m["step_seconds"] for m in measured),
        "step_seconds_max": max(m["step_seconds"] for m in measured),
        "load_average": f"{load_before} -> {load_average()}",
    }  # fmt: skip
    row["other_seconds"] = row["step_seconds"] - sum(
        row[k] for k in ("generate_seconds", "grade_seconds", "train_seconds", "weight_sync_seconds")
    )
    sequences = round(row["train_samples"])
    length = prompt_length(model_dir) + round(row["response_length_mean"])
    row["floor"] = floor_step(model_dir, sequences, length, repeats=max(3, steps))
    gc.collect()  # the floor's model and optimizer
    row["train_over_floor"] = row["train_seconds"] / row["floor"]["seconds"]
    # The least disturbed measurement of each (other work on a shared machine only adds time).
    row["train_seconds_min"] = min(m["train_seconds"] for m in measured)
    row["train_over_floor_min"] = row["train_seconds_min"] / row["floor"]["seconds_min"]
    row["step_over_floor"] = row["step_seconds"] / row["floor"]["seconds"]
    print(
        f"[{size}] {row['step_seconds']:.2f} s/step (train {row['train_seconds']:.2f}s, floor "
        f"{row['floor']['seconds']:.2f}s for {sequences}x{length} tokens); job {job_seconds:.0f}s",
        flush=True,
    )
    return row


def in_worker_thread(fn, *args):
    """fn(*args) in one long-lived worker thread, as the learner runs its updates
    (asyncio.to_thread): the floor and the memory check run torch where the learner does."""
    global _WORKER
    if _WORKER is None:
        _WORKER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-torch")
    return _WORKER.submit(fn, *args).result()


_WORKER: concurrent.futures.ThreadPoolExecutor | None = None


def floor_step(model_dir: pathlib.Path, sequences: int, length: int, repeats: int) -> dict:
    """One plain forward + backward + AdamW step of the HF model (fp32) on `sequences` x
    `length` random tokens: the median seconds of `repeats` after one warm-up step, each
    in a worker thread (see in_worker_thread)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, model.config.vocab_size, (sequences, length), generator=generator)
    attention = torch.ones_like(input_ids)

    def step() -> float:
        started = time.perf_counter()
        loss = model(input_ids=input_ids, attention_mask=attention, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    times = [in_worker_thread(step) for _ in range(1 + repeats)]
    return {
        "seconds": median(times[1:]),
        "seconds_min": min(times[1:]),
        "sequences": sequences,
        "length": length,
        "all_seconds": times,
    }


# ---------------------------------------------------------------- flat memory


def rl_update_child(model_dir: str, sequences: int, budget: int, group_size: int, max_new_tokens: int) -> None:
    """In a fresh process: one rl_update of `sequences` sampled sequences; prints JSON with
    the process's peak RSS (VmHWM) and its RSS before the update."""
    import torch
    from rft_learner.hparams import ReinforcementParams
    from rft_learner.trainer import updates
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if "micro_batch_tokens" not in inspect.signature(updates.rl_update).parameters:
        raise SystemExit("rft_learner.trainer.updates.rl_update has no micro_batch_tokens argument yet")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng = random.Random(sequences)
    groups = []
    for row in demo_rows(sequences // group_size):
        ids = tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=True)
        prompt = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        completions = [[rng.randrange(3, 99) for _ in range(max_new_tokens)] for _ in range(group_size)]
        groups.append(
            updates.Group(
                prompt_token_ids=prompt,
                completions=completions,
                logprobs=[[-4.6] * max_new_tokens for _ in completions],
                rewards=[float(rng.random() < 0.5) for _ in completions],
            )
        )
    params = ReinforcementParams(
        algorithm="grpo", kl_coef=0.0, group_size=group_size, batch_size=len(groups), max_new_tokens=max_new_tokens
    )
    gc.collect()
    before = proc_status_kib(os.getpid(), "VmRSS")
    started = time.perf_counter()
    in_worker_thread(
        lambda: updates.rl_update(
            model, None, optimizer, groups, params, tokenizer.pad_token_id, micro_batch_tokens=budget
        )
    )
    seconds = time.perf_counter() - started
    padded = sequences * (len(groups[0].prompt_token_ids) + max_new_tokens)
    print(json.dumps({"sequences": sequences, "micro_batch_tokens": budget, "padded_tokens": padded,
                      "rss_before_bytes": 1024 * before, "peak_rss_bytes": 1024 * proc_status_kib(os.getpid(), "VmHWM"),
                      "seconds": seconds}))  # fmt: skip


# glibc's malloc keeps freed heap memory (tensors below its mmap threshold, which grows up
# to 32 MiB as large blocks are freed) for reuse instead of returning it to the kernel; with
# this threshold a freed tensor's pages go back at once, so RSS shows live tensors only.
MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def memory_configs(budget: int) -> list[tuple[str, int, dict]]:
    """(column name, micro_batch_tokens, extra environment) of the memory check."""
    return [
        (f"micro_batch_tokens {budget}", budget, {}),
        ("micro_batch_tokens 0 (no bound)", 0, {}),
        (f"micro_batch_tokens {budget}, MALLOC_MMAP_THRESHOLD_=65536", budget, MMAP_THRESHOLD),
    ]


def memory_check(model_dir: pathlib.Path, batches: list[int], budget: int, args) -> list[dict]:
    rows = []
    for sequences in batches:
        for name, tokens, env in memory_configs(budget):
            command = [sys.executable, __file__, "--rl-update-child", str(model_dir), str(sequences), str(tokens),
                       str(args.group_size), str(args.max_new_tokens), str(args.torch_threads)]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
            if result.returncode != 0:
                raise SystemExit(f"rl_update child ({sequences} sequences, {name}) failed:\n{result.stderr}")
            row = {**json.loads(result.stdout.strip().splitlines()[-1]), "config": name, "env": env}
            rows.append(row)
            print(
                f"[memory] {sequences} sequences, {name}: peak RSS {row['peak_rss_bytes'] / 2**30:.2f} GiB "
                f"({row['seconds']:.1f}s)",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------- report


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def print_report(machine: dict, rows: list[dict], memory: list[dict], budget: int, args) -> None:
    print(
        f"\n### Scale ladder: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, {machine['date']}\n"
    )
    print(
        f"`{machine['command']}`. GRPO, {args.batch_size} prompts x {args.group_size} samples, max_new_tokens "
        f"{args.max_new_tokens}, kl_coef 0, rollout float32, learner --micro-batch-tokens at its default, --weight-sync "
        f"{args.weight_sync}; medians "
        f"(min-max) over the measured steps after {args.warmup_steps} warm-up step(s). Floor: the same batch as one "
        "plain HF forward + backward + AdamW step (fp32) in one process, as many times as measured steps (at least "
        "3). Load average (1, 5, 15 min) before -> after each size: "
        + "; ".join(f"{r['size']} {r['load_average']}" for r in rows)
        + ".\n"
    )
    print(
        "| size | parameters | steps | s/step | generate s | grade s | train s | weight sync s | other s "
        "| trained tok/s | floor s (batch) | train / floor | step / floor | train / floor, min / min |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = r["floor"]
        print(
            f"| {r['size']} | {r['parameters'] / 1e6:.1f}M | {r['measured_steps']} | {r['step_seconds']:.2f} "
            f"({r['step_seconds_min']:.2f}-{r['step_seconds_max']:.2f}) "
            f"| {r['generate_seconds']:.2f} | {r['grade_seconds']:.3f} | {r['train_seconds']:.2f} "
            f"| {r['weight_sync_seconds']:.2f} | {r['other_seconds']:.2f} | {r['trained_tokens_per_second']:.0f} "
            f"| {f['seconds']:.2f} ({f['sequences']}x{f['length']}) | {r['train_over_floor']:.2f}x "
            f"| {r['step_over_floor']:.2f}x | {r['train_seconds_min']:.2f} / {f['seconds_min']:.2f} = "
            f"{r['train_over_floor_min']:.2f}x |"
        )
    print(
        "\ntrained tok/s: completion tokens trained / train_seconds. Peak RSS: VmHWM summed over each service's "
        "process tree at the end of the job (so it includes the final checkpoint and export); in brackets the "
        "largest resident size sampled every 0.5 s while RL steps ran; the rollout's split is gRPC server + "
        "its child processes (vLLM's engine core).\n"
    )
    print(
        "| size | model MB (fp32) | weight sync GB/s | learner peak RSS GiB | rollout peak RSS GiB (server + children) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        lr, rr = r["learner_peak_rss"], r["rollout_peak_rss"]
        rest = rr["total_bytes"] - rr["main_bytes"]
        print(
            f"| {r['size']} | {r['model_bytes'] / 1e6:.0f} | {r['weight_sync_gb_per_second']:.3f} "
            f"| {gib(lr['total_bytes'])} (steps {gib(r['learner_sampled_rss_bytes'])}) "
            f"| {gib(rr['total_bytes'])} ({gib(rr['main_bytes'])} + {gib(rest)}; "
            f"steps {gib(r['rollout_sampled_rss_bytes'])}) |"
        )
    if memory:
        print(
            f"\nFlat memory: one rl_update (GRPO, {args.group_size} samples per prompt) on the {args.memory_size} "
            "model, each in a fresh process: its peak RSS (VmHWM) in GiB, and in brackets the growth over the "
            "RSS before the update (the JSON has each update's seconds: the first in a cold process, noisy).\n"
        )
        names = [name for name, _, _ in memory_configs(budget)]
        print(f"| sequences | padded tokens | {' | '.join(names)} |")
        print("|---|---|" + "---|" * len(names))
        for sequences in dict.fromkeys(m["sequences"] for m in memory):
            cells = []
            for name in names:
                m = next(m for m in memory if m["sequences"] == sequences and m["config"] == name)
                growth = m["peak_rss_bytes"] - m["rss_before_bytes"]
                cells.append(f"{gib(m['peak_rss_bytes'])} (+{gib(growth)})")
            padded = next(m for m in memory if m["sequences"] == sequences)["padded_tokens"]
            print(f"| {sequences} | {padded} | {' | '.join(cells)} |")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--rl-update-child":
        model_dir, sequences, budget, group_size, max_new_tokens, threads = argv[1:7]
        set_torch_threads(int(threads))
        rl_update_child(model_dir, int(sequences), int(budget), int(group_size), int(max_new_tokens))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"of {','.join(SIZES)} (default %(default)s)")
    parser.add_argument("--steps", type=int, help=f"measured RL steps per size (default {DEFAULT_STEPS})")
    parser.add_argument("--warmup-steps", type=int, default=1, help="RL steps not measured (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="prompts per step (default %(default)s)")
    parser.add_argument("--group-size", type=int, default=4, help="samples per prompt (default %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="(default %(default)s)")
    parser.add_argument("--memory-batches", default="8,32,128,256", help="sequences per rl_update in the memory check")
    parser.add_argument("--memory-budget", type=int, default=2048, help="micro_batch_tokens of the memory check")
    parser.add_argument("--memory-size", default="10m", choices=sorted(SIZES), help="model of the memory check")
    parser.add_argument("--no-memory", action="store_true", help="skip the flat-memory check")
    parser.add_argument("--json", help="also write every number to this file")
    parser.add_argument(
        "--torch-threads", type=int, default=0,
        help="torch threads of the learner, the floor and the memory check (default 0: torch's own, one per core)",
    )  # fmt: skip
    parser.add_argument("--keep-workdir", action="store_true", help="keep models and service logs after a success")
    parser.add_argument(
        "--weight-sync", choices=("stream", "collective"), default="stream",
        help="the learner's --weight-sync: gRPC chunks, or a gloo broadcast into vLLM's worker (default %(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; expected some of {','.join(SIZES)}")

    import torch

    set_torch_threads(args.torch_threads)
    machine = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(), "command": " ".join(["bench/bench_scale.py", *argv]),
    }  # fmt: skip
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="rft-bench-scale-"))
    print(f"work directory (models, service logs): {workdir}", flush=True)
    rows = [ladder_rung(size, args.steps or DEFAULT_STEPS[size], workdir, args) for size in sizes]
    memory = []
    if not args.no_memory:
        builder = _load("build_base_model", REPO / "scripts" / "build_base_model.py")
        model_dir = workdir / f"model-{args.memory_size}"
        if not model_dir.exists():
            builder.build_model(model_dir, SIZES[args.memory_size], seed=0)
        batches = [int(b) for b in args.memory_batches.split(",")]
        memory = memory_check(model_dir, batches, args.memory_budget, args)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"machine": machine, "ladder": rows, "memory": memory}, indent=2))
    print_report(machine, rows, memory, args.memory_budget, args)
    if args.keep_workdir:
        print(f"\nwork directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)  # models and checkpoints: GBs at 100M; kept on failure


if __name__ == "__main__":
    main()
