"""TRL's GRPOTrainer on the peers benchmark's task, with Hugging Face generation.

Runs in the bench-only environment (.venv-bench: torch 2.13.0 CPU, transformers, trl),
never in the project's .venv. Settings as the other contenders (bench/peers/task.py):
32 prompts x 8 completions per step (per_device_train_batch_size 256, num_generations
8, one optimizer step per generation), at most 6 new tokens, temperature 1, lr 5e-4
constant, beta 0 (no KL, no reference model), loss_type "dapo" (token mean over the
batch, as the learner's token_mean), group-scaled rewards, max_grad_norm 1, AdamW with
weight decay 0.01 (torch's default, which the learner uses). The reward is the demo
grader's exact match.

Per step it records wall time (between consecutive on_step_end callbacks), the time
inside `model.generate` and inside the reward function; the rest is the update.

    .venv-bench/bin/python bench/peers/trl_grpo.py --model M --train T --steps 150 --out trl.json --save DIR
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--save", required=True)
    args = parser.parse_args()

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows = task.load_jsonl(args.train)
    dataset = Dataset.from_list([{"prompt": r["messages"], "answer": r["answer"]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    timers = {"generate": 0.0, "grade": 0.0}

    def exact_match(completions, answer, **_) -> list[float]:
        started = time.perf_counter()
        scores = [
            task.reward(c[-1]["content"] if isinstance(c, list) else c, a)
            for c, a in zip(completions, answer, strict=True)
        ]
        timers["grade"] += time.perf_counter() - started
        return scores

    generate = model.generate

    def timed_generate(*a, **kw):
        started = time.perf_counter()
        try:
            return generate(*a, **kw)
        finally:
            timers["generate"] += time.perf_counter() - started

    model.generate = timed_generate

    steps: list[dict[str, float]] = []

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.last = None

        def on_step_begin(self, _args, state, control, **kw):
            if self.last is None:
                self.last, self.last_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, _args, state, control, **kw):
            now, cpu = time.perf_counter(), time.process_time()
            seconds = now - self.last
            steps.append({"step_seconds": seconds, "generate_seconds": timers["generate"],
                          "grade_seconds": timers["grade"],
                          "train_seconds": seconds - timers["generate"] - timers["grade"],
                          "cpu_seconds": cpu - self.last_cpu})  # fmt: skip
            timers["generate"] = timers["grade"] = 0.0
            self.last, self.last_cpu = now, cpu

    config = GRPOConfig(
        output_dir=str(pathlib.Path(args.save) / "trainer"),
        per_device_train_batch_size=task.BATCH_PROMPTS * task.GROUP_SIZE,
        num_generations=task.GROUP_SIZE,
        gradient_accumulation_steps=1,
        max_completion_length=task.MAX_NEW_TOKENS,
        temperature=1.0,
        learning_rate=task.LEARNING_RATE,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,
        max_grad_norm=task.MAX_GRAD_NORM,
        beta=0.0,
        loss_type="dapo",
        scale_rewards="group",
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=args.seed,
        disable_tqdm=True,
        use_vllm=False,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=exact_match, args=config, train_dataset=dataset, processing_class=tokenizer,
        callbacks=[StepTimes()],
    )  # fmt: skip
    trainer.train()
    trainer.save_model(args.save)
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    result = {
        "steps": steps,
        "train_reward": rewards,
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }
    pathlib.Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
