"""`make demo`: the whole product on one machine, end to end.

Starts the grader, rollout and learner as local processes on free loopback ports,
uploads the demo task (examples/demo), creates a reinforcement job on the shipped base
model (models/demo-base) with the `rft` CLI, shows live progress, prints base vs
fine-tuned on the validation set, writes a PNG plot of train and validation reward,
and stops the services (also on Ctrl-C).

    python scripts/demo.py                 # the full demo
    python scripts/demo.py --n-epochs 1    # shorter
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent
DEMO = REPO / "examples" / "demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalService:
    """One service process on loopback; logs go to a file in the work directory."""

    def __init__(self, command: str, args: list[str], workdir: pathlib.Path) -> None:
        self.command = command
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = workdir / f"{command}.log"
        self.args = [
            str(BIN / command), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port()), "--log-format", "text", *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        # A new process group: Ctrl-C reaches the demo only, which then stops services in order.
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def serving(self) -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{self.command} exited with code {self.proc.returncode}; log {self.log_path}:\n{tail}")
        try:
            with grpc.insecure_channel(self.address) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
            return status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def stop(self, grace: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_serving(services: list[LocalService], timeout: float = 600) -> None:
    started = time.monotonic()
    pending = list(services)
    while pending:
        pending = [s for s in pending if not s.serving()]
        waited = time.monotonic() - started
        names = ", ".join(s.command for s in pending)
        print(f"\r  waiting for {names or 'nothing'} ({waited:.0f}s)   ", end="", flush=True)
        if waited > timeout:
            raise SystemExit(f"\n{names} not ready after {timeout:.0f}s; see logs in {services[0].log_path.parent}")
        if pending:
            time.sleep(0.5)
    print("\r  all services SERVING" + " " * 40)


def rft(learner: LocalService, grader: LocalService, *args: str, capture: bool = True) -> str:
    command = [str(BIN / "rft"), "--learner", learner.address, "--grader", grader.address, *args]
    result = subprocess.run(command, capture_output=capture, text=True)
    if result.returncode != 0:
        detail = (result.stderr or "") if capture else ""
        raise SystemExit(f"`rft {' '.join(args)}` failed with exit code {result.returncode}\n{detail}")
    return result.stdout if capture else ""


def find_id(text: str, prefix: str) -> str:
    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)
        elif isinstance(value, str) and value.startswith(prefix):
            yield value

    for found in walk(json.loads(text)):
        return found
    raise SystemExit(f"no {prefix}... id in the CLI's output: {text[:500]}")


def plot(learner_address: str, job_id: str, out: pathlib.Path) -> None:
    """Train and validation reward over steps, from the job's recorded metrics."""
    import grpc
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rft.learner.v1 import fine_tuning_pb2 as ft
    from rft.learner.v1 import fine_tuning_pb2_grpc

    series: dict[str, list[tuple[int, float]]] = {}
    with grpc.insecure_channel(learner_address) as channel:
        stub = fine_tuning_pb2_grpc.FineTuningServiceStub(channel)
        for update in stub.WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True), timeout=60):
            if update.HasField("metrics"):
                for name in ("train_reward_mean", "valid_reward_mean", "valid_greedy_reward_mean"):
                    if name in update.metrics.values:
                        series.setdefault(name, []).append((update.metrics.step, update.metrics.values[name]))
    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    styles = {
        "train_reward_mean": ("train reward (sampled)", "-", 1.0),
        "valid_reward_mean": ("validation reward (sampled)", "o-", 2.0),
        "valid_greedy_reward_mean": ("validation reward (greedy)", "s--", 2.0),
    }
    for name, points in series.items():
        label, style, width = styles[name]
        steps, values = zip(*sorted(points), strict=True)
        axis.plot(steps, values, style, label=label, linewidth=width)
    axis.set_xlabel("step")
    axis.set_ylabel("mean grader score")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    axis.set_title(f"RFT demo: {job_id}")
    figure.tight_layout()
    figure.savefig(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "demo-base"), help="base model directory")
    parser.add_argument("--data", default=str(DEMO), help="folder with train.jsonl, valid.jsonl, grader.json, job.json")
    parser.add_argument(
        "--workdir", default=str(REPO / "data" / "demo"), help="where services keep their data and logs"
    )
    parser.add_argument("--n-epochs", type=int, help="override the job's n_epochs (fewer = shorter demo)")
    parser.add_argument("--eval-interval", type=int, help="override the job's eval_interval")
    parser.add_argument("--seed", type=int, default=1, help="job seed")
    parser.add_argument("--fresh", action="store_true", help="delete the work directory first")
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        help="after the job, keep the services up (Ctrl-C stops them) to try the fine-tuned model through the"
        " OpenAI-compatible API",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="print the web console's URL at the start and keep the services up after the job until Ctrl-C",
    )
    args = parser.parse_args(argv)
    args.keep_serving = args.keep_serving or args.console

    data = pathlib.Path(args.data)
    workdir = pathlib.Path(args.workdir)
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    hyper = json.loads((data / "job.json").read_text())
    if args.n_epochs is not None:
        hyper["n_epochs"] = args.n_epochs
    if args.eval_interval is not None:
        hyper["eval_interval"] = args.eval_interval

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    grader = LocalService("rft-grader", ["--data-dir", str(workdir / "grader")], workdir)
    rollout = LocalService("rft-rollout", ["--model", args.model], workdir)
    http_port = free_port()
    base_url = f"http://127.0.0.1:{http_port}/v1"
    learner = LocalService(
        "rft-learner",
        ["--data-dir", str(workdir / "learner"), "--rollout-addresses", rollout.address,
         "--grader-address", grader.address, "--checkpoint-interval", "20",
         "--http-host", "127.0.0.1", "--http-port", str(http_port),
         "--model-catalogue", f"demo-base={args.model}"],
        workdir,
    )  # fmt: skip
    services = [grader, rollout, learner]
    job_id = ""
    started = time.monotonic()
    try:
        print(f"1/5 starting grader, rollout (vLLM, ~30-60 s) and learner; logs in {workdir}")
        for service in services:
            service.start()
        wait_serving(services)
        print(f"  OpenAI-compatible API: base_url={base_url} (any API key; docs/openai-migration.md)")
        console_url = base_url.removesuffix("/v1") + "/console/"
        print(f"  web console: {console_url}" + (" (watch the job there; docs/console.md)" if args.console else ""))

        print("2/5 uploading the demo dataset")
        train = find_id(rft(learner, grader, "--json", "files", "upload", str(data / "train.jsonl")), "file-")
        valid = find_id(rft(learner, grader, "--json", "files", "upload", str(data / "valid.jsonl")), "file-")
        print(f"  train {train}, valid {valid}")

        print("3/5 creating the reinforcement job")
        flags = [f"--{key.replace('_', '-')}={value}" for key, value in hyper.items()]
        created = rft(
            learner, grader, "--json", "jobs", "create", "--model", args.model, "--training-file", train,
            "--validation-file", valid, "--grader-spec", str(data / "grader.json"), "--seed", str(args.seed),
            "--suffix", "demo", *flags,
        )  # fmt: skip
        job_id = find_id(created, "ftjob-")
        print(f"  job {job_id}")

        print("4/5 training (live progress; Ctrl-C stops the demo and the services)")
        rft(learner, grader, "jobs", "watch", job_id, capture=False)

        print("5/5 results")
        plot_path = workdir / "reward.png"
        plot(learner.address, job_id, plot_path)
        job = json.loads(rft(learner, grader, "--json", "jobs", "get", job_id))
        exported = workdir / "fine-tuned-model"
        rft(learner, grader, "models", "export", job_id, "--out", str(exported), "--force")
        print(f"  reward plot:       {plot_path}")
        print(f"  fine-tuned model:  {exported}  (serve it: make serve-rollout ARGS='--model {exported}')")
        print(f"  finished in {time.monotonic() - started:.0f}s")
        (workdir / "job.json").write_text(json.dumps(job, indent=2))
        model_name = f"ft:demo-base:default:demo:{job_id}"
        print(f"  through the OpenAI API: model {model_name!r} at base_url {base_url}")
        if args.keep_serving:
            print(
                f"  serving until Ctrl-C; the console: {console_url}#/jobs/{job_id}; or try:\n"
                f"    OpenAI(base_url={base_url!r}, api_key='any').chat.completions.create(\n"
                f"        model={model_name!r}, messages=[{{'role': 'user', 'content': 'What is 12+34?'}}])"
            )
            while all(service.proc.poll() is None for service in services):
                time.sleep(1)
    except KeyboardInterrupt:
        print("\ninterrupted: cancelling the job and stopping the services")
        if job_id:
            with contextlib.suppress(SystemExit):
                rft(learner, grader, "jobs", "cancel", job_id)
        raise SystemExit(130) from None
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    main()
