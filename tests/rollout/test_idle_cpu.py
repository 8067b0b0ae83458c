"""An idle rollout leaves the CPU alone (issue #16).

vLLM's CPU default puts the model in a worker process that busy-polls its shared-memory
queue (`sched_yield`) for about a second after every engine step; beside a training
learner on a small machine that takes the learner's core. The service runs the worker
inside the engine process instead (RolloutConfig.cpu_single_process), which blocks when
idle. Measured as CPU time, not wall time: the rollout's whole process tree (server,
engine and any worker) over the second after a Generate returns. A spinning worker
spends most of that second on the CPU (0.5-1.0 s measured here, less on a machine busy
with other work); a blocked engine a few hundredths.
"""

from __future__ import annotations

import time

import psutil
from rft.rollout.v1 import rollout_pb2
from rollout_helpers import token_prompt

IDLE_SECONDS = 1.0
# CPU seconds the tree may use while idle for IDLE_SECONDS: well above a blocked
# engine's, well below one spinning core's.
IDLE_CPU_LIMIT = 0.25


def tree_cpu_seconds(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def test_an_idle_rollout_does_not_spin(rollout) -> None:
    request = rollout_pb2.GenerateRequest(
        prompts=[token_prompt([5 + i, 6, 7]) for i in range(8)],
        sampling=rollout_pb2.SamplingParams(n=4, max_tokens=8, temperature=1.0, seed=3),
    )
    used = []
    for _ in range(3):  # the least of three: another process's burst cannot fail the test
        assert rollout.stub.Generate(request, timeout=120).results
        before = tree_cpu_seconds(rollout.proc.proc.pid)
        time.sleep(IDLE_SECONDS)
        used.append(tree_cpu_seconds(rollout.proc.proc.pid) - before)
    assert min(used) < IDLE_CPU_LIMIT, f"CPU seconds used in {IDLE_SECONDS}s idle after Generate: {used}"
