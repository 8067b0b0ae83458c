"""Prometheus metrics of the rollout service (the dashboards use exactly these names).

Per-RPC counts and latencies (rft_rpc_*) come from the shared interceptor.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("rft_rollout_requests_total", "Generation and update requests received, by RPC.", ["rpc"])
GENERATED_TOKENS = Counter("rft_rollout_generated_tokens_total", "Completion tokens generated (all samples).")
PROMPT_TOKENS = Counter("rft_rollout_prompt_tokens_total", "Prompt tokens submitted (each prompt counted once).")
QUEUE_DEPTH = Gauge("rft_rollout_queue_depth", "Engine requests waiting or running (one per sample).")
TIME_TO_FIRST_TOKEN = Histogram(
    "rft_rollout_time_to_first_token_seconds",
    "Seconds from submitting an engine request (a prompt and its n samples) to its first token.",
    buckets=_LATENCY_BUCKETS,
)
GENERATION_SECONDS = Histogram(
    "rft_rollout_generation_seconds",
    "Seconds a Generate / StreamGenerate request took, from receipt to its last sample.",
    buckets=_LATENCY_BUCKETS,
)
POLICY_VERSION = Gauge("rft_rollout_policy_version", "Policy version being served (0: the weights loaded at start).")
LORA_RANK = Gauge("rft_rollout_lora_rank", "Rank of the LoRA adapter serving on top of the weights; 0 when none.")
WEIGHT_UPDATE_SECONDS = Histogram(
    "rft_rollout_weight_update_seconds",
    "Seconds of an applied weight update, from its first message to serving the new version.",
    ["transport"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
WEIGHT_UPDATE_BYTES = Counter("rft_rollout_weight_update_bytes_total", "Tensor bytes of applied weight updates.")
WEIGHT_UPDATE_FAILURES = Counter(
    "rft_rollout_weight_update_failures_total",
    "Weight updates refused or failed, by reason (invalid: bad request; engine: the engine failed; not_ready; transfer: a collective transfer broke).",
    ["reason"],
)

# Episodes (multi-turn, tool-using samples).
EPISODES = Counter("rft_rollout_episodes_total", "Episodes finished, by how they ended.", ["end"])
EPISODE_TURNS = Histogram(
    "rft_rollout_episode_turns", "Model turns per finished episode.", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32)
)
TOOL_SERVER_UP = Gauge(
    "rft_rollout_tool_server_up",
    "1 while an MCP tool server's session is open and its last call did not fail in transport; 0 while it is "
    "down (reopened by the first call after the server's reconnect_seconds).",
    ["server"],
)
TOOL_CALLS = Counter("rft_rollout_tool_calls_total", "Tool calls made by episodes (unparsable ones included).")
TOOL_ERRORS = Counter(
    "rft_rollout_tool_errors_total",
    "Tool calls that failed (unparsable, unknown tool, tool error, timeout, unreachable server).",
)
TOOL_CALL_SECONDS = Histogram(
    "rft_rollout_tool_call_seconds", "Seconds a tool call took (calls that were sent).", buckets=_LATENCY_BUCKETS
)
TOOL_TOKENS = Counter(
    "rft_rollout_tool_tokens_total", "Tokens inserted into episodes (tool results and their chat-template tokens)."
)


def observe_episode(outcome) -> None:
    """Count one finished episode (a domain EpisodeOutcome)."""
    EPISODES.labels(outcome.end).inc()
    EPISODE_TURNS.observe(outcome.turns)
    TOOL_CALLS.inc(len(outcome.tool_calls))
    TOOL_ERRORS.inc(sum(call.is_error for call in outcome.tool_calls))
    for call in outcome.tool_calls:
        if call.latency_seconds > 0:
            TOOL_CALL_SECONDS.observe(call.latency_seconds)
    TOOL_TOKENS.inc(len(outcome.token_mask) - sum(outcome.token_mask))
