"""Our RL step against its peers, in one run on one machine (issue #16).

On the demo model (models/demo-base) and task (examples/demo: two-digit addition, exact
match), with the same settings for all: 32 prompts x 8 samples per step, at most 6 new
tokens, temperature 1, lr 5e-4 constant, GRPO, no KL term, `--steps` steps (150) over
the first 960 training examples (30 batches x 5 epochs; fewer steps take fewer), it runs:

- **ours**: the full product. The grader, rollout (vLLM) and learner services as local
  processes on loopback (as `make demo`), the files uploaded and the job created and
  followed with the `rft` CLI. No periodic evaluation (eval_interval 0: only before and
  after), no intermediate checkpoints, the last weights exported. `--ours S:T,...` runs
  one job per variant, each with max_staleness S and the learner's --torch-threads T
  (0: torch's default); the default "0:0" is on-policy, as the others. "1:1" overlaps
  the next batch's generation with the update and splits 2 cores between the rollout
  (its engine computes on cores - 1 = 1 thread) and the learner.
- **floor**: bench/peers/floor.py, a minimal loop in one process: vLLM generate, exact
  match, one Hugging Face GRPO step, in-place weight reload.
- **TRL**: bench/peers/trl_grpo.py, TRL's GRPOTrainer with Hugging Face generation, in a
  bench-only virtualenv (.venv-bench, created here on first use: the project's torch
  build, trl 1.16.0, the project's transformers). TRL's vLLM mode is not
  run: TRL 1.16 supports vLLM 0.22-0.31, and on our vLLM 0.32 its weight sync fails
  ("'Parameter' object has no attribute 'weight_loader'").

It prints per contender: s/step (median of the steps after `--warmup` steps) with the
breakdown (generate, grade, train, weight sync; from our job's own step metrics, the
floor's and TRL's timers), wall-clock seconds per step over the measured steps, CPU
seconds per step over the same steps (user + system, of the three services' process trees
for ours, of the one process for the others: what the step costs in compute, which waits
on other processes do not add to; other load still inflates it, since torch's OpenMP
threads spin while they wait for a preempted sibling), the train reward (mean of the 10 steps ending at steps 50, 100, 150), validation reward
before -> after, greedy and sampled (4 samples at temperature 1), all scored by the
floor's evaluator (one vLLM engine, the same prompts and seeds for every model), and the
ratios ours / floor and ours / TRL. The CPU model and load average head the output;
`--json` writes every number.

    .venv/bin/python bench/bench_peers.py                 # 150 steps, all three (about 15 min on 2 cores)
    .venv/bin/python bench/bench_peers.py --steps 20 --warmup 5
    .venv/bin/python bench/bench_peers.py --ours 0:0,1:1,1:0 --skip trl       # overlap variants
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
PEERS = REPO / "bench" / "peers"
sys.path.insert(0, str(PEERS))

import task  # noqa: E402

BENCH_VENV = REPO / ".venv-bench"
# What the bench-only environment holds besides torch (TRL and what it needs).
BENCH_PACKAGES = ["trl==1.16.0", "transformers=={transformers}", "accelerate", "datasets"]


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def demo_module():
    spec = importlib.util.spec_from_file_location("rft_demo_script", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) used so far by process trees (each root and its
    descendants), sampled every `period` seconds against the wall clock (time.time), so
    that the CPU spent between two moments of a job can be read off afterwards.

    A reading is the sum over the tree's living processes of their own CPU and their
    reaped children's (`children_user` / `children_system`): a descendant that lived
    between two samples (a grader's sandbox child) is counted through its parent, and one
    that exits moves from its own line to its parent's, counted once either way."""

    def __init__(self, pids: list[int], period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pids, self.period = pids, period
        self.samples: list[tuple[float, list[float]]] = []
        """(time, CPU seconds of each root's tree, in `pids` order)."""
        self.done = threading.Event()

    def _trees(self) -> list[float]:
        import psutil

        totals = []
        for pid in self.pids:
            total = 0.0
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            for proc in tree:
                try:
                    t = proc.cpu_times()
                except psutil.Error:  # exited since the listing: its parent's children_* has it once reaped
                    continue
                total += t.user + t.system + t.children_user + t.children_system
            totals.append(total)
        return totals

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.time(), self._trees()))
            self.done.wait(self.period)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def at(self, moment: float) -> list[float]:
        """CPU seconds each tree used by `moment`, interpolated between the samples around it."""
        if not self.samples:
            raise RuntimeError("no CPU sample was taken")
        before = max((s for s in self.samples if s[0] <= moment), default=self.samples[0], key=lambda s: s[0])
        after = min((s for s in self.samples if s[0] >= moment), default=self.samples[-1], key=lambda s: s[0])
        if after[0] == before[0]:
            return list(before[1])
        share = (moment - before[0]) / (after[0] - before[0])
        return [b + (a - b) * share for b, a in zip(before[1], after[1], strict=True)]


def summarise(steps: list[dict[str, float]], rewards: list[float], warmup: int, wall: float | None) -> dict:
    measured = steps[warmup:] or steps
    keys = ("step_seconds", "generate_seconds", "grade_seconds", "train_seconds", "weight_sync_seconds")
    row = {k: statistics.median(s[k] for s in measured) for k in keys if all(k in s for s in measured)}
    row["steps"] = len(steps)
    row["measured_steps"] = len(measured)
    row["wall_seconds_per_step"] = (
        wall if wall is not None else sum(s["step_seconds"] for s in measured) / len(measured)
    )
    if all("cpu_seconds" in s for s in measured):
        row["cpu_seconds_per_step"] = sum(s["cpu_seconds"] for s in measured) / len(measured)
    row["train_reward"] = {str(at): task.window_mean(rewards, at) for at in (50, 100, 150)}
    row["train_reward_last10"] = task.window_mean(rewards, len(rewards))
    return row


# ---------------------------------------------------------------- ours


def run_ours(args, work: pathlib.Path, train: pathlib.Path, valid: pathlib.Path, epochs: int, staleness: int,
             threads: int) -> dict:  # fmt: skip
    import grpc
    from rft.learner.v1 import fine_tuning_pb2 as ft
    from rft.learner.v1 import fine_tuning_pb2_grpc

    demo = demo_module()
    grader = demo.LocalService("rft-grader", ["--data-dir", str(work / "grader")], work)
    rollout = demo.LocalService("rft-rollout", ["--model", args.model], work)
    learner = demo.LocalService(
        "rft-learner",
        ["--data-dir", str(work / "learner"), "--rollout-addresses", rollout.address,
         "--grader-address", grader.address, "--checkpoint-interval", "100000",
         "--torch-threads", str(threads), "--http-host", "127.0.0.1",
         "--http-port", str(demo.free_port())],
        work,
    )  # fmt: skip
    services = [grader, rollout, learner]
    try:
        for service in services:
            service.start()
        demo.wait_serving(services)
        sampler = CpuSampler([service.proc.pid for service in services])
        sampler.start()
        cli = lambda *a: demo.rft(learner, grader, *a)  # noqa: E731
        train_id = demo.find_id(cli("--json", "files", "upload", str(train)), "file-")
        valid_id = demo.find_id(cli("--json", "files", "upload", str(valid)), "file-")
        created = cli(
            "--json", "jobs", "create", "--model", args.model, "--training-file", train_id,
            "--validation-file", valid_id, "--grader-spec", str(REPO / "examples" / "demo" / "grader.json"),
            "--seed", "1", "--n-epochs", str(epochs), "--batch-size", str(task.BATCH_PROMPTS),
            "--group-size", str(task.GROUP_SIZE), "--learning-rate-multiplier", str(task.LEARNING_RATE / 1e-3),
            "--kl-coef", "0", "--max-new-tokens", str(task.MAX_NEW_TOKENS), "--temperature", "1",
            "--eval-interval", "0", "--eval-samples", str(task.EVAL_SAMPLES), "--algorithm", "grpo",
            "--max-staleness", str(staleness), "--export-checkpoint", "last",
        )  # fmt: skip
        job_id = demo.find_id(created, "ftjob-")
        started = time.monotonic()
        with open(work / "watch.log", "w") as log:
            subprocess.run(
                [str(demo.BIN / "rft"), "--learner", learner.address, "jobs", "watch", job_id],
                stdout=log, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        job_seconds = time.monotonic() - started
        job = json.loads(cli("--json", "jobs", "get", job_id))
        job = job.get("job", job)
        if "SUCCEEDED" not in str(job.get("status", "")).upper():
            error = json.dumps(job.get("error", job.get("status")))
            raise SystemExit(f"our job did not succeed: {error[:500]}; logs in {work}")
        exported = work / "ours-model"
        cli("models", "export", job_id, "--out", str(exported), "--force")
        points: list[tuple[int, float, dict[str, float]]] = []
        with grpc.insecure_channel(learner.address) as channel:
            stub = fine_tuning_pb2_grpc.FineTuningServiceStub(channel)
            for update in stub.WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True), timeout=120):
                if update.HasField("metrics") and "step_seconds" in update.metrics.values:
                    m = update.metrics
                    points.append((m.step, m.time.ToNanoseconds() / 1e9, dict(m.values)))
    finally:
        if "sampler" in locals():
            sampler.stop()
        for service in reversed(services):
            service.stop()
    points.sort(key=lambda p: p[0])
    steps = [p[2] for p in points]
    rewards = [s["train_reward_mean"] for s in steps]
    measured = points[args.warmup :]
    wall = (measured[-1][1] - measured[0][1]) / (len(measured) - 1) if len(measured) > 1 else None
    row = summarise(steps, rewards, args.warmup, wall)
    if len(measured) > 1:  # all three services' CPU between the first and last measured step's end
        steps_between = len(measured) - 1
        used = [b - a for a, b in zip(sampler.at(measured[0][1]), sampler.at(measured[-1][1]), strict=True)]
        row["cpu_seconds_per_step"] = sum(used) / steps_between
        row["cpu_seconds_per_step_by_service"] = {
            service.command: seconds / steps_between for service, seconds in zip(services, used, strict=True)
        }
    row["job_seconds"] = job_seconds
    row["model_dir"] = str(exported)
    return row


# ---------------------------------------------------------------- TRL


def ensure_bench_venv() -> pathlib.Path | None:
    """.venv-bench with TRL; None (and a note) when it cannot be made."""
    python = BENCH_VENV / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([str(python), "-c", "import trl, datasets"], capture_output=True).returncode == 0
    ):
        return python
    import torch
    import transformers

    # The project's own torch build, exactly (2.13.0+cpu): this machine's wheel folder, or
    # the index / find-links that scripts/install.sh takes from the environment. A bare
    # `torch` requirement would pull a multi-GB CUDA build from PyPI; an exact local
    # version fails instead.
    torch_pin = f"torch=={torch.__version__}"
    extra = []
    if os.environ.get("RFT_TORCH_INDEX_URL"):
        extra += ["--extra-index-url", os.environ["RFT_TORCH_INDEX_URL"]]
    if os.environ.get("RFT_TORCH_FIND_LINKS"):
        extra += ["--find-links", os.environ["RFT_TORCH_FIND_LINKS"]]
    print(f"  creating {BENCH_VENV} ({torch_pin}, trl; a few minutes)", flush=True)
    packages = [p.format(transformers=transformers.__version__) for p in BENCH_PACKAGES]
    steps = [
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(BENCH_VENV)],
        [str(python), "-m", "pip", "install", "-q", *extra, torch_pin],
        [str(python), "-m", "pip", "install", "-q", *extra, torch_pin, *packages],
    ]
    for command in steps:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"  could not create {BENCH_VENV}: {' '.join(command)}\n{result.stderr[-2000:]}")
            return None
    return python


def run_trl(args, work: pathlib.Path, train: pathlib.Path) -> dict | None:
    python = ensure_bench_venv()
    if python is None:
        return None
    out, save = work / "trl.json", work / "trl-model"
    with open(work / "trl.log", "w") as log:
        result = subprocess.run(
            [str(python), str(PEERS / "trl_grpo.py"), "--model", args.model, "--train", str(train),
             "--steps", str(args.steps), "--out", str(out), "--save", str(save)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if result.returncode != 0:
        print(f"  TRL failed (exit {result.returncode}); log {work / 'trl.log'}")
        return None
    data = json.loads(out.read_text())
    row = summarise(data["steps"], data["train_reward"], args.warmup, None)
    row["model_dir"] = str(save)
    row["versions"] = data["versions"]
    return row


# ---------------------------------------------------------------- floor + evaluation


def run_floor(args, work: pathlib.Path, train: pathlib.Path, valid: pathlib.Path, others: dict[str, str]) -> dict:
    out = work / "floor.json"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [sys.executable, str(PEERS / "floor.py"), "--model", args.model, "--train", str(train),
               "--valid", str(valid), "--steps", str(args.steps if "floor" not in args.skip else 0),
               "--out", str(out), "--save", str(work / "floor-model")]  # fmt: skip
    for name, directory in others.items():
        command += ["--evaluate", f"{name}={directory}"]
    with open(work / "floor.log", "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = (work / "floor.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"the floor failed (exit {result.returncode}):\n{tail}")
    data = json.loads(out.read_text())
    row = summarise(data["steps"], data["train_reward"], args.warmup, None) if data["steps"] else {}
    row["evaluations"] = data["evaluations"]
    return row


# ---------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def report(rows: dict[str, dict], evaluations: dict[str, dict[str, float]], args, header: list[str]) -> str:
    lines = [*header, ""]
    lines.append(
        "| contender | s/step (median) | generate s | grade s | train s | weight sync s | wall s/step "
        "| CPU s/step | train reward @50 / @100 / @150 | valid greedy before -> after "
        "| valid sampled before -> after |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    base = evaluations.get("base", {})
    for name, row in rows.items():
        after = evaluations.get(name, {})
        reward = " / ".join(fmt(row["train_reward"][k]) for k in ("50", "100", "150"))
        lines.append(
            f"| {name} | {fmt(row['step_seconds'])} | {fmt(row.get('generate_seconds'))} "
            f"| {fmt(row.get('grade_seconds'))} | {fmt(row.get('train_seconds'))} "
            f"| {fmt(row.get('weight_sync_seconds'))} | {fmt(row['wall_seconds_per_step'])} "
            f"| {fmt(row.get('cpu_seconds_per_step'))} | {reward} "
            f"| {fmt(base.get('greedy'))} -> {fmt(after.get('greedy'))} "
            f"| {fmt(base.get('sampled'))} -> {fmt(after.get('sampled'))} |"
        )
    lines.append("")
    for name, row in rows.items():
        if "cpu_seconds_per_step_by_service" in row:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in row["cpu_seconds_per_step_by_service"].items())
            lines.append(f"{name}: CPU s/step by service: {parts}")
    for name, ours in rows.items():
        if not name.startswith("ours"):
            continue
        for peer in ("floor", "trl"):
            if peer in rows:
                median = ours["step_seconds"] / rows[peer]["step_seconds"]
                wall = ours["wall_seconds_per_step"] / rows[peer]["wall_seconds_per_step"]
                cpu = [rows[n].get("cpu_seconds_per_step") for n in (name, peer)]
                cpu_ratio = f", {cpu[0] / cpu[1]:.2f}x (CPU s/step)" if all(cpu) else ""
                lines.append(f"{name} / {peer}: {median:.2f}x (median s/step), {wall:.2f}x (wall s/step){cpu_ratio}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="RL steps per contender")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of the medians")
    parser.add_argument(
        "--ours",
        default="0:0",
        help="our jobs, comma-separated: max_staleness:learner --torch-threads (0 threads: torch's default)",
    )
    parser.add_argument("--skip", default="", help="comma-separated contenders not to run: ours, trl, floor")
    parser.add_argument("--model", default=str(REPO / "models" / "demo-base"))
    parser.add_argument("--json", help="write every number to this file")
    parser.add_argument("--workdir", help="keep logs and models here (default: a temporary directory)")
    args = parser.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    variants = [tuple(int(x) for x in v.split(":")) for v in args.ours.split(",") if v.strip()]
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    import torch
    import vllm

    header = [
        f"bench_peers: {args.steps} steps, {task.BATCH_PROMPTS} prompts x {task.GROUP_SIZE} samples, "
        f"{task.MAX_NEW_TOKENS} new tokens, lr {task.LEARNING_RATE:g}, GRPO, no KL; medians after "
        f"{args.warmup} warm-up steps",
        f"CPU: {cpu_model()} ({os.cpu_count()} cores); torch {torch.__version__}, vllm {vllm.__version__}",
        f"command: {' '.join([pathlib.Path(sys.executable).name, *sys.argv])}",
    ]
    print("\n".join(header), flush=True)
    train_rows, epochs = task.train_file_lines(task.load_jsonl(REPO / "examples" / "demo" / "train.jsonl"), args.steps)
    train = work / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    valid = REPO / "examples" / "demo" / "valid.jsonl"
    print(f"data: {len(train_rows)} training examples x {epochs} epochs; {valid.name} for validation; work {work}")

    rows: dict[str, dict] = {}
    loads: dict[str, str] = {}
    contenders = []
    for staleness, threads in variants:
        name = "ours" if (staleness, threads) == (0, 0) else f"ours s{staleness}" + (f" t{threads}" if threads else "")
        contenders.append(
            (name, lambda s=staleness, t=threads, n=name: run_ours(args, work / n.replace(" ", "-"), train, valid,
                                                                   epochs, s, t))
        )  # fmt: skip
    contenders.append(("trl", lambda: run_trl(args, work, train)))
    for name, run in contenders:
        if name.split()[0] in args.skip:
            continue
        print(f"== {name} (load average {load_average()})", flush=True)
        (work / name.replace(" ", "-")).mkdir(exist_ok=True)
        started = time.monotonic()
        row = run()
        loads[name] = load_average()
        if row is not None:
            rows[name] = row
            print(
                f"  {name}: {fmt(row['step_seconds'])} s/step (median) in {time.monotonic() - started:.0f}s", flush=True
            )
    print(f"== floor and evaluation (load average {load_average()})", flush=True)
    floor = run_floor(args, work, train, valid, {name: row["model_dir"] for name, row in rows.items()})
    loads["floor"] = load_average()
    if "floor" not in args.skip:
        rows["floor"] = floor
    header.append("load average (1, 5, 15 min) after each: " + "; ".join(f"{k} {v}" for k, v in loads.items()))
    print()
    print(report(rows, floor["evaluations"], args, header))
    if args.json:
        pathlib.Path(args.json).write_text(
            json.dumps({"header": header, "rows": rows, "evaluations": floor["evaluations"]}, indent=2)
        )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
