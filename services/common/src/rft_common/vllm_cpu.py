"""How the suite runs vLLM on CPU: the rollout service's engine and the learner's
chat-completions servers both use this."""

from __future__ import annotations


def single_process_env(threads: int, cores: int) -> dict[str, str]:
    """Environment for vLLM on CPU with its model worker inside the engine process.

    vLLM's CPU default runs the worker in a process of its own, fed by a shared-memory
    queue whose reader spins (`sched_yield`) for a second after each message before it
    sleeps (vllm/distributed/device_communicators/shm_broadcast.py, SpinCondition,
    busy_loop_s=1, not configurable): an idle replica holds a core for a second after
    every request, which on a small machine is the learner's core. With
    VLLM_ENABLE_V1_MULTIPROCESSING=0 the CPU platform keeps the uniprocess executor
    (AsyncLLM still runs the engine in a child process), which blocks when idle. The
    worker process's OpenMP binding does not apply there, so the thread count is set
    here: `threads`, or one less than `cores` (vLLM keeps one core for its scheduler)."""
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "OMP_NUM_THREADS": str(threads or max(1, cores - 1)),
    }
