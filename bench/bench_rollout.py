"""Rollout service benchmark: generation throughput and weight-update speed.

1. Generate tokens/s through the real gRPC service against vLLM's own offline
   `LLM.generate` on the same model, prompts, sampling and engine settings, in one run.
   Both engines stay loaded (an idle vLLM engine uses no CPU) and the measurements
   alternate, so background load on a shared machine hits both alike. Target: the
   service reaches >= 0.9x of offline.
2. UpdateWeights seconds and GB/s for the stream transport (manifest + 4 MiB chunks,
   CRC-32) and the file transport (safetensors on a shared volume), for the "tiny" and
   "100m" presets of scripts/build_base_model.py, against an in-process copy of the
   same bytes into existing tensors (torch copy_), the ceiling.
3. LoRA (`--lora-rank R`, default 16; 0 skips): on a service started with
   --max-lora-rank, the UpdateWeights seconds of a rank-R adapter on every projection
   against the full state dict (what a LoRA job sends each step instead), and, on the
   first preset only (LoRA sampling of the 100m preset takes minutes on a CPU),
   generation tokens/s with the adapter against the same service without one.

    .venv/bin/python bench/bench_rollout.py [--rounds 3] [--presets tiny,100m] [--lora-rank 16]
"""

from __future__ import annotations

import argparse
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

REPO = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent
sys.path.insert(0, str(REPO / "scripts"))

import build_base_model  # noqa: E402

# The service's engine settings (RolloutConfig defaults), given to the offline engine too.
ENGINE = {
    "dtype": "float32",
    "gpu_memory_utilization": 0.3,
    "enforce_eager": True,
    "seed": 0,
    "max_num_seqs": 256,
    "enable_chunked_prefill": False,
}
KV_CACHE_GIB = "1"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """`rft-rollout serve` on loopback, started and stopped by this benchmark."""

    def __init__(self, model_dir: pathlib.Path, weights_dir: pathlib.Path, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bench-rollout-", suffix=".log", delete=False)
        args = [str(BIN / "rft-rollout"), "serve", "--model", str(model_dir), "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--metrics-port", "0", "--weights-dir", str(weights_dir)]
        args += ["--kv-cache-gib", KV_CACHE_GIB, "--max-prompts", "1024", "--log-format", "text", *extra_args]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", -1)]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=options)
        self._wait_serving()

    def _wait_serving(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rft-rollout exited: see {self.log.name}")
            try:
                status = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"rft-rollout not SERVING after {timeout}s: see {self.log.name}")

    @property
    def stub(self):
        from rft.rollout.v1 import rollout_pb2_grpc

        return rollout_pb2_grpc.RolloutServiceStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- 1. generation throughput ----------------------------------------------------------


def prompts(count: int) -> list[list[int]]:
    """Chat-rendered-like prompts of 20-60 character tokens."""
    tokenizer = build_base_model.build_tokenizer()
    texts = [f"Question {i}: what is {i} times {i + 3}? Think step by step." * (1 + i % 2) for i in range(count)]
    return [tokenizer.encode(text, add_special_tokens=False) for text in texts]


def grpc_generate(service: Service, batch: list[list[int]], n: int, max_tokens: int, calls: int) -> float:
    """Tokens/s of `calls` concurrent Generate RPCs that split `batch` between them."""
    from rft.rollout.v1 import rollout_pb2

    def request(part: list[list[int]]) -> rollout_pb2.GenerateRequest:
        return rollout_pb2.GenerateRequest(
            prompts=[rollout_pb2.Prompt(token_ids=rollout_pb2.TokenIds(ids=ids)) for ids in part],
            sampling=rollout_pb2.SamplingParams(n=n, max_tokens=max_tokens, temperature=1.0, seed=0),
        )

    parts = [batch[i::calls] for i in range(calls)]
    requests = [request(part) for part in parts]
    started = time.perf_counter()
    futures = [service.stub.Generate.future(r, timeout=600) for r in requests]
    tokens = sum(f.result().completion_tokens for f in futures)
    return tokens / (time.perf_counter() - started)


def offline_generate(llm, batch: list[list[int]], n: int, max_tokens: int, logprobs: bool = True) -> float:
    """Tokens/s of vLLM's offline API. With `logprobs` it produces what the service
    returns (sampled-token logprobs); without, it shows what they cost."""
    from vllm import SamplingParams

    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=1.0, seed=0, logprobs=0 if logprobs else None)
    started = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in batch], params, use_tqdm=False)
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return tokens / (time.perf_counter() - started)


def bench_generate(model_dir: pathlib.Path, work: pathlib.Path, rounds: int) -> list[tuple[str, float]]:
    from vllm import LLM

    batch, n, max_tokens = prompts(64), 8, 32
    service = Service(model_dir, work)
    try:
        llm = LLM(model=str(model_dir), **ENGINE)
        offline_generate(llm, batch, n, max_tokens)  # warm-up, as the service does before SERVING
        grpc_generate(service, batch, n, max_tokens, 1)
        results: dict[str, list[float]] = {"offline": [], "offline-plain": [], "grpc1": [], "grpc8": []}
        for _ in range(rounds):
            results["offline"].append(offline_generate(llm, batch, n, max_tokens))
            results["grpc1"].append(grpc_generate(service, batch, n, max_tokens, 1))
            results["grpc8"].append(grpc_generate(service, batch, n, max_tokens, 8))
            results["offline-plain"].append(offline_generate(llm, batch, n, max_tokens, logprobs=False))
        del llm
    finally:
        service.stop()
    label = f"64 prompts x n={n} x {max_tokens} tokens, temperature 1, median of {rounds}"
    print(f"\nGenerate throughput, tiny model ({label})")
    base = statistics.median(results["offline"])
    rows = [
        ("vLLM offline LLM.generate, logprobs=0 (baseline)", base),
        ("gRPC Generate, 1 call", statistics.median(results["grpc1"])),
        ("gRPC Generate, 8 concurrent calls", statistics.median(results["grpc8"])),
    ]
    plain = statistics.median(results["offline-plain"])
    for name, value in [*rows, ("(vLLM offline without logprobs, for reference)", plain)]:
        print(f"  {name:<50} {value:>10,.0f} tok/s  {value / base:5.2f}x")
    return rows


# -- 2. weight updates -----------------------------------------------------------------


def random_state_dict(model_dir: pathlib.Path, seed: int):
    """Every state-dict key (tied lm_head.weight included) with new random values."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    state = {
        name: (tensor + 0.01 * torch.randn_like(tensor)).contiguous() for name, tensor in model.state_dict().items()
    }
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    return state


def copy_seconds(state, targets) -> float:
    """An in-process copy of every tensor into existing tensors (what applying weights
    amounts to): the ceiling for any transport."""
    started = time.perf_counter()
    for name, tensor in state.items():
        targets[name].copy_(tensor)
    return time.perf_counter() - started


def bench_updates(preset: str, work: pathlib.Path, rounds: int) -> None:
    from rft_common.weights import file_update_requests, weight_update_requests
    from safetensors.torch import save_file

    model_dir = build_base_model.build_model(work / preset, preset, seed=0)
    weights_dir = work / f"{preset}-shared"
    weights_dir.mkdir(exist_ok=True)
    states = [random_state_dict(model_dir, seed) for seed in (1, 2)]
    total = sum(t.numel() * t.element_size() for t in states[0].values())
    arrays = [{name: tensor.numpy() for name, tensor in state.items()} for state in states]
    files = []
    write_seconds = []
    for i, state in enumerate(states):
        started = time.perf_counter()
        path = weights_dir / f"w{i}.safetensors"
        save_file(state, str(path))
        write_seconds.append(time.perf_counter() - started)
        files.append(path)

    targets = {name: tensor.clone() for name, tensor in states[0].items()}
    service = Service(model_dir, weights_dir)
    stream, stream_apply, file_, file_apply, copy = [], [], [], [], []
    version = 0
    try:
        for r in range(rounds):
            copy.append(copy_seconds(states[(r + 1) % 2], targets))
            version += 1
            started = time.perf_counter()
            response = service.stub.UpdateWeights(weight_update_requests(version, arrays[r % 2].items()), timeout=600)
            stream.append(time.perf_counter() - started)
            stream_apply.append(response.apply_seconds)
            version += 1
            started = time.perf_counter()
            response = service.stub.UpdateWeights(file_update_requests(version, str(files[(r + 1) % 2])), timeout=600)
            file_.append(time.perf_counter() - started)
            file_apply.append(response.apply_seconds)
    finally:
        service.stop()

    def row(name: str, seconds: list[float], extra: str = "") -> None:
        median = statistics.median(seconds)
        ratio = statistics.median(copy) / median
        print(f"  {preset:<5} {name:<34} {median:8.3f} s {total / median / 1e9:7.2f} GB/s {ratio:6.2f}x {extra}")

    print(f"\nWeight update, preset {preset}: {len(arrays[0])} tensors, {total / 1e6:,.1f} MB (median of {rounds})")
    print(f"  {'':<5} {'transport':<34} {'seconds':>10} {'GB/s':>12} {'vs copy':>7}")
    row("in-process tensor copy_ (ceiling)", copy)
    row("UpdateWeights stream (4 MiB, crc32)", stream, f"engine paused {statistics.median(stream_apply):.3f} s")
    row("UpdateWeights file (safetensors)", file_, f"engine paused {statistics.median(file_apply):.3f} s")
    print(f"  {preset:<5} (writing the safetensors file, learner side: {statistics.median(write_seconds):.3f} s)")


# -- 3. LoRA -----------------------------------------------------------------------------


def peft_adapter_arrays(model_dir: pathlib.Path, rank: int, seed: int) -> dict:
    """A rank-`rank` PEFT adapter on every projection of the blocks, B random (PEFT
    starts it at zero, which would not change the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    return {name: t.detach().numpy().copy() for name, t in get_peft_model_state_dict(peft_model).items()}


def bench_lora(preset: str, work: pathlib.Path, rounds: int, rank: int, with_generate: bool) -> None:
    from rft.rollout.v1 import rollout_pb2
    from rft_common.weights import weight_update_requests

    model_dir = build_base_model.build_model(work / f"lora-{preset}", preset, seed=0)
    full = {name: tensor.numpy() for name, tensor in random_state_dict(model_dir, 1).items()}
    adapters = [peft_adapter_arrays(model_dir, rank, seed) for seed in (1, 2)]
    lora = rollout_pb2.LoraAdapter(rank=rank, alpha=2 * rank)
    full_bytes = sum(a.nbytes for a in full.values())
    adapter_bytes = sum(a.nbytes for a in adapters[0].values())
    batch, n, max_tokens = prompts(64), 8, 32
    service = Service(model_dir, work, ("--max-lora-rank", str(rank)))
    full_seconds, adapter_seconds, plain_tps, adapter_tps = [], [], [], []
    version = 0
    try:
        if with_generate:
            grpc_generate(service, batch, n, max_tokens, 1)  # warm-up
        for r in range(rounds):
            version += 1
            started = time.perf_counter()
            service.stub.UpdateWeights(weight_update_requests(version, full.items()), timeout=600)
            full_seconds.append(time.perf_counter() - started)
            if with_generate:
                plain_tps.append(grpc_generate(service, batch, n, max_tokens, 1))
            version += 1
            started = time.perf_counter()
            service.stub.UpdateWeights(weight_update_requests(version, adapters[r % 2].items(), lora=lora), timeout=600)
            adapter_seconds.append(time.perf_counter() - started)
            if with_generate:
                adapter_tps.append(grpc_generate(service, batch, n, max_tokens, 1))
    finally:
        service.stop()
    full_s, adapter_s = statistics.median(full_seconds), statistics.median(adapter_seconds)
    print(f"\nLoRA, preset {preset}, rank {rank} on every projection (median of {rounds})")
    print(f"  UpdateWeights full state dict   {full_bytes / 1e6:9.1f} MB {full_s:8.3f} s  (baseline)")
    print(
        f"  UpdateWeights LoRA adapter      {adapter_bytes / 1e6:9.1f} MB {adapter_s:8.3f} s  {full_s / adapter_s:6.1f}x faster"
    )
    if with_generate:
        plain, with_adapter = statistics.median(plain_tps), statistics.median(adapter_tps)
        print(f"  Generate, no adapter            {plain:12,.0f} tok/s  (baseline)")
        print(f"  Generate, with the adapter      {with_adapter:12,.0f} tok/s  {with_adapter / plain:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measurements per figure (median reported)")
    parser.add_argument("--presets", default="tiny,100m", help="model presets for the weight-update benchmark")
    parser.add_argument("--skip-generate", action="store_true", help="only the weight-update benchmark")
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=16,
        choices=[0, 1, 8, 16, 32, 64, 128, 256],
        help="adapter rank of the LoRA benchmark (one vLLM takes as --max-lora-rank); 0 skips it",
    )
    args = parser.parse_args()
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = KV_CACHE_GIB
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        work = pathlib.Path(tmp)
        if not args.skip_generate:
            tiny = build_base_model.build_model(work / "generate-tiny", "tiny", seed=0)
            rows = bench_generate(tiny, work, args.rounds)
            ratio = min(value for _, value in rows[1:]) / rows[0][1]
            print(f"  target >= 0.90x of offline: {'met' if ratio >= 0.9 else 'NOT met'} (worst {ratio:.2f}x)")
        for preset in args.presets.split(","):
            bench_updates(preset, work, args.rounds)
        if args.lora_rank:
            for index, preset in enumerate(args.presets.split(",")):
                bench_lora(preset, work, args.rounds, args.lora_rank, with_generate=index == 0)


if __name__ == "__main__":
    main()
