"""The floor of bench_peers.py: the least an RL step on this task can cost with vLLM.

One process, no services: vLLM's `LLM` with its engine in this process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, so no engine or worker process waits on another),
then per step: generate 32 prompts x 8 samples, grade by exact match, one GRPO update of
the Hugging Face model (task.grpo_step), and load the new weights into vLLM's model in
place (the worker's `reload_weights` with every state-dict key, the tied lm_head included) and drop its
prefix cache. No checkpoints, no logprobs from vLLM, no seeds per request.

It is also the benchmark's evaluator: with the same engine it scores the base model,
the floor's result and every `--evaluate NAME=DIR` model directory on the validation
set, greedy (1 sample) and sampled (task.EVAL_SAMPLES at temperature 1, seeded per
prompt), so that every contender is judged by the same code.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 .venv/bin/python bench/peers/floor.py --train T --valid V \
        --steps 150 --out floor.json --save DIR [--evaluate ours=DIR ...]

Run by bench/bench_peers.py, which sets the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import task  # noqa: E402

# Threads of vLLM's generation: one, as the rollout's engine on 2 cores (vLLM keeps a core
# for its scheduler); more made generation slower here. Training uses torch's default.
GENERATE_THREADS = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--valid", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--save", required=True, help="where the floor's trained model is written")
    parser.add_argument("--evaluate", action="append", default=[], help="NAME=DIR, a model to score as well")
    args = parser.parse_args()
    assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0", "run with the engine in this process"

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams

    set_threads = torch.set_num_threads  # vLLM's CPU worker replaces it with a no-op
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train, valid = task.load_jsonl(args.train), task.load_jsonl(args.valid)

    def render(example: dict) -> list[int]:
        text = tokenizer.apply_chat_template(example["messages"], tokenize=False, add_generation_prompt=True)
        return list(tokenizer.encode(text, add_special_tokens=False))

    train_ids, valid_ids = [render(e) for e in train], [render(e) for e in valid]
    # Whole prefills, as the rollout's default: vLLM 0.32's CPU worker dies on a seeded
    # request whose prompt is split across steps (rft_rollout.config.enable_chunked_prefill).
    llm = LLM(model=args.model, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.3, max_model_len=512,
              seed=0, enable_chunked_prefill=False)  # fmt: skip
    train_threads = torch.get_num_threads()

    def load_into_engine(state: dict[str, torch.Tensor]) -> None:
        items = list(state.items())

        def load(worker) -> None:  # the rollout's reload (model.load_weights fails on a loaded vLLM 0.32 model)
            worker.reload_weights(weights_iterator=iter(items), is_checkpoint_format=True)

        llm.collective_rpc(load)
        llm.reset_prefix_cache()

    def evaluate() -> dict[str, float]:
        prompts = [{"prompt_token_ids": ids} for ids in valid_ids]
        greedy = llm.generate(prompts, SamplingParams(n=1, temperature=0.0, max_tokens=task.MAX_NEW_TOKENS),
                              use_tqdm=False)  # fmt: skip
        sampled_params = [
            SamplingParams(n=task.EVAL_SAMPLES, temperature=1.0, max_tokens=task.MAX_NEW_TOKENS, seed=1000 + i)
            for i in range(len(prompts))
        ]
        sampled = llm.generate(prompts, sampled_params, use_tqdm=False)
        greedy_r = [task.reward(o.outputs[0].text, e["answer"]) for o, e in zip(greedy, valid, strict=True)]
        sampled_r = [task.reward(c.text, e["answer"]) for o, e in zip(sampled, valid, strict=True) for c in o.outputs]
        return {"greedy": sum(greedy_r) / len(greedy_r), "sampled": sum(sampled_r) / len(sampled_r)}

    def model_state(directory: str) -> dict[str, torch.Tensor]:
        state = load_file(str(pathlib.Path(directory) / "model.safetensors"))
        if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:  # tied: vLLM needs both keys
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        return state

    result: dict = {"evaluations": {"base": evaluate()}}

    # ---------------------------------------------------------------- the floor loop
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.LEARNING_RATE)
    params = SamplingParams(n=task.GROUP_SIZE, temperature=1.0, max_tokens=task.MAX_NEW_TOKENS)
    steps, rewards = [], []
    for indices in task.batches(len(train), args.seed, args.steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        set_threads(GENERATE_THREADS)
        outputs = llm.generate([{"prompt_token_ids": train_ids[i]} for i in indices], params, use_tqdm=False)
        set_threads(train_threads)
        generated = time.perf_counter()
        scores = [
            [task.reward(c.text, train[i]["answer"]) for c in o.outputs] for i, o in zip(indices, outputs, strict=True)
        ]
        advantages = task.group_advantages(torch.tensor(scores)).flatten().tolist()
        graded = time.perf_counter()
        prompts = [train_ids[i] for i, o in zip(indices, outputs, strict=True) for _ in o.outputs]
        completions = [list(c.token_ids) for o in outputs for c in o.outputs]
        task.grpo_step(model, optimizer, prompts, completions, advantages, tokenizer.pad_token_id)
        trained = time.perf_counter()
        with torch.no_grad():
            load_into_engine(model.state_dict())
        done = time.perf_counter()
        rewards.append(sum(map(sum, scores)) / sum(map(len, scores)))
        steps.append({"step_seconds": done - started, "generate_seconds": generated - started,
                      "grade_seconds": graded - generated, "train_seconds": trained - graded,
                      "weight_sync_seconds": done - trained,
                      "cpu_seconds": time.process_time() - cpu_started})  # fmt: skip
    model.save_pretrained(args.save)
    tokenizer.save_pretrained(args.save)
    result["steps"] = steps
    result["train_reward"] = rewards
    result["evaluations"]["floor"] = evaluate()

    for spec in args.evaluate:
        name, _, directory = spec.partition("=")
        if (pathlib.Path(directory) / "model.safetensors").exists():
            load_into_engine(model_state(directory))
            result["evaluations"][name] = evaluate()
    pathlib.Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
