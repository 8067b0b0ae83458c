"""Pre-train the demo's base model: the "tiny" Qwen2 preset of build_base_model.py,
trained with supervised learning on examples/demo/sft.jsonl, and saved as a Hugging Face
model directory (models/demo-base) that transformers and vLLM load.

Training stops early on purpose. Every `--eval-every` steps the greedy accuracy on a
slice of train.jsonl (the reinforcement job's prompts, never in sft.jsonl) is measured,
and training ends at the first check that reaches `--target-accuracy`, or after
`--max-steps`. The result is a model that answers some problems right and leaves
headroom for reinforcement learning to show. The validation set is only read at the end,
to report; it never steers training.

Sequences are chat-rendered exactly as the learner and rollout render them
(tokenizer.apply_chat_template with the generation prompt) followed by the answer and
<|im_end|>; the loss covers the answer and <|im_end|> only. Same seed, same thread count
-> same weights.

    python scripts/pretrain_demo_model.py --out models/demo-base --seed 0
    python scripts/pretrain_demo_model.py --check-vllm   # also load the result in vLLM
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _build_base_model():
    """scripts/build_base_model.py as a module (it is a script, not a package)."""
    name = "build_base_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "build_base_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up while it executes
    spec.loader.exec_module(module)
    return module


def load_rows(path: pathlib.Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def encode(tokenizer, rows: list[dict]) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, target ids) per row: the chat prompt with the generation prompt, and
    the answer followed by <|im_end|>."""
    texts = [tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=False) for r in rows]
    prompts = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    targets = [tokenizer.encode(r["answer"], add_special_tokens=False) + [tokenizer.eos_token_id] for r in rows]
    return prompts, targets


def sft_batch(prompts, targets, pad_id):
    """Right-padded input ids, attention mask and labels (-100 outside the targets)."""
    import torch

    width = max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    labels = torch.full((len(prompts), width), -100, dtype=torch.long)
    for row, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        seq = p + t
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(p) : len(seq)] = torch.tensor(t)
    return ids, mask, labels


def generate(model, tokenizer, prompts, max_new_tokens=6, temperature=0.0, seed=0, batch_size=256) -> list[str]:
    """Completions of `prompts` (token ids): greedy when temperature is 0, else sampled."""
    import torch

    texts = []
    generator_seed = seed
    model.eval()
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, p in enumerate(chunk):  # left padding
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        sampling = {"do_sample": False} if temperature == 0 else {"do_sample": True, "temperature": temperature}
        if temperature:
            torch.manual_seed(generator_seed)
            generator_seed += 1
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                top_k=None,
                top_p=None,
                **sampling,
            )
        texts.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    return texts


def accuracy(model, tokenizer, rows, temperature=0.0, seed=0) -> float:
    prompts, _ = encode(tokenizer, rows)
    answers = generate(model, tokenizer, prompts, temperature=temperature, seed=seed)
    return sum(a == r["answer"] for a, r in zip(answers, rows, strict=True)) / len(rows)


def train(args) -> pathlib.Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    build = _build_base_model()
    with tempfile.TemporaryDirectory() as tmp:
        build.build_model(tmp, preset="tiny", seed=args.seed)
        model = AutoModelForCausalLM.from_pretrained(tmp, torch_dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2ForCausalLM tiny, {n_params:,} parameters, seed {args.seed}", flush=True)

    sft = load_rows(args.data / "sft.jsonl")
    probe = load_rows(args.data / "train.jsonl")[: args.probe_size]
    prompts, targets = encode(tokenizer, sft)
    print(
        f"data: {len(sft)} SFT examples; stop at greedy accuracy >= {args.target_accuracy:.0%} on "
        f"{len(probe)} train.jsonl prompts, or after {args.max_steps} steps",
        flush=True,
    )

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = min(50, args.max_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup)))
    order_rng = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(sft), generator=order_rng).tolist()
    cursor = 0
    started = time.monotonic()
    probe_accuracy = 0.0
    step = 0
    for step in range(1, args.max_steps + 1):
        if cursor + args.batch_size > len(order):
            order = torch.randperm(len(sft), generator=order_rng).tolist()
            cursor = 0
        index = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        ids, mask, labels = sft_batch([prompts[i] for i in index], [targets[i] for i in index], tokenizer.pad_token_id)
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % args.eval_every == 0 or step == args.max_steps:
            probe_accuracy = accuracy(model, tokenizer, probe)
            elapsed = time.monotonic() - started
            print(
                f"step {step:5d}  loss {loss.item():.4f}  probe greedy {probe_accuracy:6.1%}  {elapsed:6.1f}s",
                flush=True,
            )
            if probe_accuracy >= args.target_accuracy:
                break
    seconds = time.monotonic() - started
    print(f"trained {step} steps in {seconds:.0f}s (probe greedy accuracy {probe_accuracy:.1%})", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.config.use_cache = True
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"saved {args.out} ({size / 1e6:.1f} MB)", flush=True)
    return args.out


def report(out: pathlib.Path, data: pathlib.Path, threads: int) -> dict[str, float]:
    """Greedy and sampled (temperature 1) accuracy of the saved model on valid.jsonl."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    valid = load_rows(data / "valid.jsonl")
    figures = {
        "valid_greedy_accuracy": accuracy(model, tokenizer, valid),
        "valid_sampled_accuracy": sum(accuracy(model, tokenizer, valid, 1.0, seed) for seed in range(4)) / 4,
    }
    print(
        f"valid.jsonl ({len(valid)} problems): greedy {figures['valid_greedy_accuracy']:.1%}, "
        f"sampled (temperature 1, 4 seeds) {figures['valid_sampled_accuracy']:.1%}",
        flush=True,
    )
    return figures


def check_vllm(out: pathlib.Path, data: pathlib.Path) -> None:
    """Load the directory in vLLM and report its greedy accuracy on valid.jsonl."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(out), dtype="float32", enforce_eager=True, gpu_memory_utilization=0.2, seed=0)
    valid = load_rows(data / "valid.jsonl")
    outputs = llm.chat([r["messages"] for r in valid], SamplingParams(temperature=0.0, max_tokens=6), use_tqdm=False)
    right = sum(o.outputs[0].text == r["answer"] for o, r in zip(outputs, valid, strict=True))
    print(f"vLLM greedy accuracy on valid.jsonl: {right / len(valid):.1%}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "models" / "demo-base", help="model directory")
    parser.add_argument("--data", type=pathlib.Path, default=ROOT / "examples" / "demo", help="demo data directory")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed [default: 0]")
    parser.add_argument("--max-steps", type=int, default=3000, help="upper bound on optimizer steps [default: 3000]")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step [default: 64]")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate [default: 2e-3]")
    parser.add_argument("--eval-every", type=int, default=25, help="steps between probe checks [default: 25]")
    parser.add_argument("--probe-size", type=int, default=200, help="train.jsonl prompts probed [default: 200]")
    parser.add_argument("--target-accuracy", type=float, default=0.3, help="stop at this probe accuracy [0.3]")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads [default: 2]")
    parser.add_argument("--check-vllm", action="store_true", help="also load the saved model in vLLM")
    parser.add_argument("--skip-training", action="store_true", help="only report on an existing --out")
    args = parser.parse_args(argv)

    if not args.skip_training:
        train(args)
    report(args.out, args.data, args.threads)
    if args.check_vllm:
        check_vllm(args.out, args.data)


if __name__ == "__main__":
    main(sys.argv[1:])
