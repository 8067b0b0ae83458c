"""How fast the web console's job page renders a long job, in headless Chromium.

Writes a finished 1,000-step reinforcement job (train metrics every step, validation every
16 steps, 1,000 events, 60 checkpoints) into a learner's SQLite store, starts `rft-learner
serve` on it with the console, and times, over several page loads:
- page: from navigation to the job page drawn (reward chart with every step, events and
  checkpoints listed);
- the floor: the same page's metrics request alone (fetch + JSON parse in the page),
  measured in the same run; the ratio page / floor says what the console adds.
The issue's target: the page in under a second.

    .venv/bin/python bench/bench_console.py [--steps 1000] [--loads 5]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import random
import shutil
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "console"))

from rft.learner.v1 import fine_tuning_pb2 as ft  # noqa: E402
from rft_learner.db import Database  # noqa: E402
from rft_learner.job_store import JobStore  # noqa: E402
from service_process import ServiceProcess  # noqa: E402


def write_job(data_dir: pathlib.Path, steps: int) -> str:
    store = JobStore(Database(data_dir / "learner.db"))
    request = ft.CreateJobRequest(model=str(REPO / "models" / "demo-base"), training_file="file-x", suffix="bench")
    request.method.reinforcement.grader.spec.update(
        {"type": "string_check", "name": "x", "input": "a", "reference": "a", "operation": "eq"}
    )
    job = store.create(request, seed=1, model_name="demo-base")
    rng = random.Random(0)
    for step in range(1, steps + 1):
        reward = 0.3 + 0.4 * (1 - math.exp(-step / 300)) + rng.gauss(0, 0.03)
        store.add_metrics(job.id, step, {
            "train_reward_mean": reward, "kl": 0.01 * step / steps, "entropy": 1.2 - 0.4 * step / steps,
            "response_length_mean": 5 + rng.random(), "loss": rng.gauss(0, 0.1), "policy_loss": rng.gauss(0, 0.1),
            "generate_seconds": 0.2, "grade_seconds": 0.01, "train_seconds": 0.3, "weight_sync_seconds": 0.05,
            "step_seconds": 0.56, "grad_norm": rng.random(), "clip_fraction": 0.1 * rng.random(),
        })  # fmt: skip
        if step % 16 == 0:
            store.add_metrics(
                job.id,
                step,
                {
                    "valid_reward_mean": reward,
                    "valid_greedy_reward_mean": reward + 0.05,
                    "pass@1": reward,
                    "greedy_pass@1": reward,
                },
            )
        store.add_event(job.id, 0, f"step {step}/{steps}")
        if step % (steps // 60 or 1) == 0:
            valid = {"valid_reward_mean": reward, "valid_greedy_reward_mean": reward + 0.05, "pass@1": reward,
                     "pass@4": min(1.0, 2 * reward), "greedy_pass@1": reward, "valid_response_length_mean": 5.0,
                     "valid_prompts": 300.0, "valid_grader_errors": 0.0, "eval_seconds": 12.0}  # fmt: skip
            store.add_checkpoint(job.id, step, str(data_dir / f"ckpt-{step}"), valid)
    store.update(
        job.id, status=ft.JOB_STATUS_SUCCEEDED, trained_steps=steps, total_steps=steps, finished_at=time.time()
    )
    return job.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    from console_browser import CHROMIUM_FLAGS, chromium_path
    from playwright.sync_api import sync_playwright

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-console-"))
    try:
        job_id = write_job(workdir, args.steps)
        with (
            ServiceProcess("rft-learner", ["--data-dir", str(workdir), "--torch-threads", "1"]) as learner,
            sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
            # bypass_csp: wait_for_function's polling needs eval, which the console's CSP forbids.
            page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
            root = learner.base_url.removesuffix("/v1")
            page.goto(root + "/console/")
            page.get_by_role("navigation", name="Main").wait_for()
            drawn = f"document.querySelector('figure.chart')?.dataset.points == {args.steps} && document.querySelectorAll('.events li').length > 0 && document.querySelectorAll('#ckpt-heading ~ div tbody tr').length > 0"
            pages, floors = [], []
            for _ in range(args.loads + 1):  # the first load warms caches; not counted
                page.goto(root + "/console/#/jobs")
                page.get_by_role("heading", name="Fine-tuning jobs").wait_for()
                started = time.perf_counter()
                page.evaluate(f"location.hash = '#/jobs/{job_id}'")
                page.wait_for_function(drawn, polling="raf", timeout=60_000)
                pages.append(time.perf_counter() - started)
                floors.append(
                    page.evaluate(f"""async () => {{
                    const t = performance.now();
                    const r = await fetch('/v1/fine_tuning/jobs/{job_id}/metrics', {{headers: {{Authorization: 'Bearer x'}}}});
                    await r.json();
                    return (performance.now() - t) / 1000;
                }}""")
                )
            browser.close()
        page_s, floor_s = statistics.median(pages[1:]), statistics.median(floors[1:])
        print(f"job page of a {args.steps}-step job, median of {args.loads} loads (Chromium headless, this machine):")
        print(f"  {'what':<44}{'seconds':>9}")
        print(f"  {'page drawn (chart, events, checkpoints)':<44}{page_s:>9.3f}")
        print(f"  {'floor: the metrics request alone':<44}{floor_s:>9.3f}")
        print(
            f"  ratio page / floor: {page_s / floor_s:.1f}x; target: page < 1 s: {'met' if page_s < 1 else 'NOT met'}"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
