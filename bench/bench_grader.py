"""Grader throughput and latency through the real gRPC service.

Starts `rft-grader serve` on loopback, then per grader type and batch size (1, 16, 256):
- latency: one call at a time, p50 / p99 of the call's wall time;
- throughput: `--concurrency` calls in flight, grades (samples) per second.
Requests are serialized once and sent as bytes, so the client spends little CPU of the
shared machine. Each type's throughput is also shown as a ratio to string_check at the
same batch size (the in-run baseline). Loops are bounded by count and time.

    .venv/bin/python bench/bench_grader.py [--seconds 2] [--types string_check,python]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rft.grader.v1 import grader_pb2

GRADE = "/rft.grader.v1.GraderService/Grade"
BIN = pathlib.Path(sys.executable).parent

SPECS = {
    "string_check": {
        "type": "string_check",
        "name": "s",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "eq",
    },
    "multi": {
        "type": "multi",
        "name": "m",
        "graders": {
            "exact": {
                "type": "string_check",
                "name": "e",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
                "operation": "eq",
            },
            "loose": {
                "type": "string_check",
                "name": "l",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
                "operation": "ilike",
            },
        },
        "calculate_output": "0.7 * exact + 0.3 * loose",
    },
    "ranked_list": {
        "type": "ranked_list",
        "name": "r",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "score_metric": "reciprocal_rank",
    },
    "text_similarity/fuzzy_match": {
        "type": "text_similarity",
        "name": "t",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": "fuzzy_match",
    },
    "text_similarity/rouge_l": {
        "type": "text_similarity",
        "name": "t",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": "rouge_l",
    },
    "json_check": {
        "type": "json_check",
        "name": "j",
        "input": "{{sample.output_text}}",
        "fields": {"answer": "{{item.answer}}"},
    },
    "math_equivalence": {
        "type": "math_equivalence",
        "name": "m",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
    },
    "python": {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"},
}


def sample_for(kind: str, i: int) -> tuple[str, dict]:
    answer = f"answer {i % 10}"
    if kind == "ranked_list":
        return f"gene{i % 7}\ngene{(i + 1) % 7}\ngene{(i + 2) % 7}", {"answer": f"gene{(i + 1) % 7}"}
    if kind == "json_check":
        return f'{{"answer": "{answer}"}}', {"answer": answer}
    if kind == "math_equivalence":
        return f"The answer is $\\frac{{{i % 9 + 1}}}{{2}}$", {"answer": str((i % 9 + 1) / 2)}
    if kind.startswith("text_similarity"):
        return f"the answer is {answer} for sure", {"answer": f"the answer is {answer}"}
    return answer, {"answer": answer}


def request_bytes(kind: str, batch: int) -> bytes:
    request = grader_pb2.GradeRequest(tenant="bench")
    request.spec.update(SPECS[kind])
    for i in range(batch):
        text, item = sample_for(kind, i)
        entry = request.items.add()
        entry.sample.output_text = text
        entry.item.update(item)
    return request.SerializeToString()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(os.path.join(data_dir, "grader.log"), "w")  # noqa: SIM115 (lives as long as the server)
    args = [str(BIN / "rft-grader"), "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0"]
    args += ["--data-dir", data_dir, "--log-format", "text", "--max-batch-items", "4096"]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    with grpc.insecure_channel(address) as channel:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"rft-grader exited: see {log.name}")
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return proc, address
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError("rft-grader did not report SERVING")


async def measure(channel: grpc.aio.Channel, payload: bytes, batch: int, seconds: float, concurrency: int) -> dict:
    call = channel.unary_unary(GRADE)  # bytes in, bytes out: no client-side (de)serialization
    reply = grader_pb2.GradeResponse.FromString(await call(payload, timeout=120))
    errors = sum(1 for r in reply.results if r.HasField("error"))
    if errors:
        first = next(r for r in reply.results if r.HasField("error")).error.message
        raise RuntimeError(f"{errors} of {batch} samples failed: {first}")
    for _ in range(3):  # warm-up
        await call(payload, timeout=120)

    latencies: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(latencies) < 2000:
        started = time.perf_counter()
        await call(payload, timeout=120)
        latencies.append(time.perf_counter() - started)

    calls = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal calls
        while time.monotonic() < end:
            await call(payload, timeout=120)
            calls += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "grades_per_s": calls * batch / elapsed,
    }


async def run(address: str, kinds: list[str], batches: list[int], seconds: float, concurrency: int) -> None:
    options = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    results: dict[tuple[str, int], dict] = {}
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        print(f"{'type':30} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'grades/s':>11} {'vs string_check':>16}")
        for kind in kinds:
            for batch in batches:
                try:
                    row = await measure(channel, request_bytes(kind, batch), batch, seconds, concurrency)
                except (grpc.RpcError, RuntimeError) as exc:
                    detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
                    print(f"{kind:30} {batch:>5} skipped: {detail[:90]}")
                    continue
                results[(kind, batch)] = row
                base = results.get(("string_check", batch))
                ratio = f"{row['grades_per_s'] / base['grades_per_s']:.3f}x" if base else "-"
                print(
                    f"{kind:30} {batch:>5} {row['p50_ms']:>9.2f} {row['p99_ms']:>9.2f} "
                    f"{row['grades_per_s']:>11,.0f} {ratio:>16}",
                    flush=True,
                )
    print()
    for kind, batch, target, what in [
        ("string_check", 256, 20_000, "grades/s"),
        ("python", 256, 5_000, "grades/s"),
        ("python", 1, 10.0, "p50 ms"),
    ]:
        row = results.get((kind, batch))
        if row is None:
            print(f"target {kind} batch {batch}: not measured")
            continue
        value = row["grades_per_s"] if what == "grades/s" else row["p50_ms"]
        met = value >= target if what == "grades/s" else value <= target
        print(
            f"target {kind} batch {batch}: {what} {value:,.2f} (target {'>=' if what == 'grades/s' else '<='} {target:,}) {'MET' if met else 'MISSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement phase")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight for the throughput phase")
    parser.add_argument("--types", default=",".join(SPECS), help="comma-separated grader types")
    parser.add_argument("--batches", default="1,16,256")
    parser.add_argument("--address", default="", help="bench a running server instead of starting one")
    args = parser.parse_args()
    kinds = [kind for kind in args.types.split(",") if kind]
    batches = [int(b) for b in args.batches.split(",")]
    if args.address:
        asyncio.run(run(args.address, kinds, batches, args.seconds, args.concurrency))
        return
    with tempfile.TemporaryDirectory(prefix="bench-grader-") as data_dir:
        proc, address = start_server(data_dir)
        try:
            print(f"rft-grader on {address} (cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f})")
            asyncio.run(run(address, kinds, batches, args.seconds, args.concurrency))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
