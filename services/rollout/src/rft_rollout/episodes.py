"""Multi-turn, tool-using episodes: token in, token out.

One episode is one sample. Turn by turn:

1. the engine continues from `prompt ids + trajectory ids` (the exact token ids so far;
   vLLM's prefix cache finds the earlier turns' KV blocks, so a turn pays only for its
   new tokens);
2. the turn's sampled tokens join the trajectory with mask 1 and their logprobs;
3. the turn's text is searched for tool calls in Qwen's (Hermes) format,
   `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; none: the episode ends
   with this answer;
4. the calls run (concurrently, each with its server's timeout and output cap; a failure
   is a tool error shown to the model, never the end of the episode);
5. their results are rendered with the chat template as token ids (the text the template
   writes after the assistant's end-of-turn token, the tool messages and the next
   generation prompt) and join the trajectory with mask 0 and logprob 0.

The trajectory is never re-tokenised from text: the sampled ids are kept as the engine
returned them, and only the inserted tool turns are tokenised, on their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rft_rollout.domain import (
    EngineSample,
    EpisodeEnd,
    EpisodeMessage,
    EpisodeOutcome,
    EpisodeParams,
    SampleRequest,
    ToolCallRecord,
)

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_TOOL_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.S)

# Seeds of later turns: seed + TURN_SEED_STRIDE * turn, far from the seed + sample
# index that the samples of one prompt use.
TURN_SEED_STRIDE = 1_000_003


# ---------------------------------------------------------------- pure helpers


@dataclasses.dataclass(frozen=True)
class ParsedCall:
    """One tool-call block of a turn. `arguments` is None and `error` says why when the
    block is not a JSON object {"name": str, "arguments": object}."""

    name: str
    arguments: dict[str, Any] | None
    raw: str
    error: str = ""


def _parse_block(raw: str) -> ParsedCall:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return ParsedCall("", None, raw, f"the tool call is not valid JSON ({exc})")
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return ParsedCall("", None, raw, 'a tool call must be a JSON object with a "name" string')
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            pass
    if not isinstance(arguments, dict):
        return ParsedCall(value["name"], None, raw, '"arguments" must be a JSON object')
    return ParsedCall(value["name"], arguments, raw)


def parse_tool_calls(text: str) -> tuple[str, list[ParsedCall]]:
    """(the turn's text without its tool-call blocks, stripped; the calls in order).

    A `<tool_call>` left open at the end of the turn is a call that failed to parse."""
    calls = [_parse_block(match.group(1).strip()) for match in _TOOL_CALL.finditer(text)]
    content = _TOOL_CALL.sub("", text)
    opened = content.find(TOOL_CALL_OPEN)
    if opened >= 0:
        raw = content[opened + len(TOOL_CALL_OPEN) :].strip()
        calls.append(ParsedCall("", None, raw, f"the tool call is not closed with {TOOL_CALL_CLOSE}"))
        content = content[:opened]
    return content.strip(), calls


@dataclasses.dataclass
class Trajectory:
    """Token ids after the prompt, with their logprobs and mask (1 sampled, 0 inserted)."""

    token_ids: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    mask: list[int] = dataclasses.field(default_factory=list)

    def add_sampled(self, token_ids: Sequence[int], logprobs: Sequence[float]) -> None:
        if len(token_ids) != len(logprobs):
            raise ValueError(f"{len(token_ids)} sampled tokens but {len(logprobs)} logprobs")
        self.token_ids += token_ids
        self.logprobs += logprobs
        self.mask += [1] * len(token_ids)

    def add_inserted(self, token_ids: Sequence[int]) -> None:
        self.token_ids += token_ids
        self.logprobs += [0.0] * len(token_ids)
        self.mask += [0] * len(token_ids)

    def __len__(self) -> int:
        return len(self.token_ids)


def turn_room(budget: int, max_model_len: int, prompt_length: int, trajectory_length: int) -> int:
    """Tokens the next turn may sample: what is left of the episode's token budget and of
    the context (a sequence of max_model_len tokens at most)."""
    return max(0, min(budget - trajectory_length, max_model_len - prompt_length - trajectory_length))


def turn_seed(seed: int | None, turn: int) -> int | None:
    return None if seed is None else seed + TURN_SEED_STRIDE * turn


def arguments_text(call: ParsedCall) -> str:
    return call.raw if call.arguments is None else json.dumps(call.arguments, sort_keys=True)


# ---------------------------------------------------------------- the loop


@dataclasses.dataclass(frozen=True)
class EpisodeDeps:
    """What an episode needs from the service. `generate` is Engine.generate for one
    sample; `decode` and `render_tool_turn` are blocking tokenizer work, run through
    `offload` (the tokenizer thread)."""

    generate: Callable[[str, SampleRequest, int], Awaitable[list[EngineSample]]]
    decode: Callable[[list[list[int]]], list[str]]
    render_tool_turn: Callable[[list[dict[str, str]], bool], list[int]]
    offload: Callable[..., Awaitable[Any]]
    call_tool: Callable[[Sequence[str], str, dict[str, Any], str], Awaitable[Any]]
    eos_token_id: int
    max_model_len: int
    max_calls_per_turn: int = 8
    max_calls_per_episode: int = 32
    timeout_seconds: float = 300.0
    clock: Callable[[], float] = time.monotonic


@dataclasses.dataclass
class EpisodeRun:
    """An episode's result: the trajectory, its outcome and the first turn's sample
    (finish reason, version label)."""

    trajectory: Trajectory
    outcome: EpisodeOutcome
    weight_version: str | None
    text: str


class _TimeUp(Exception):
    """The episode's wall-clock limit ran out."""


async def _before(deadline: float, deps: EpisodeDeps, awaitable: Awaitable[Any]) -> Any:
    """`awaitable`'s result, or _TimeUp (with it cancelled) when `deadline` passes first."""
    try:
        return await asyncio.wait_for(awaitable, max(0.0, deadline - deps.clock()))
    except TimeoutError:
        raise _TimeUp from None


async def run_episode(
    deps: EpisodeDeps, episode_id: str, request: SampleRequest, params: EpisodeParams, started: float | None = None
) -> EpisodeRun:
    """One episode from `request.prompt_token_ids`; `request.max_tokens` bounds the whole
    trajectory and `deps.timeout_seconds` its wall-clock time from `started` (a
    `deps.clock()` reading: when its request arrived; default now). Cancelling it aborts
    the turn in flight."""
    deadline = (deps.clock() if started is None else started) + deps.timeout_seconds
    prompt = list(request.prompt_token_ids)
    trajectory = Trajectory()
    messages: list[EpisodeMessage] = []
    records: list[ToolCallRecord] = []
    version: str | None = None
    end: EpisodeEnd = "max_turns"
    final_text, turns, calls_run = "", 0, 0
    for turn in range(params.max_turns):
        room = turn_room(request.max_tokens, deps.max_model_len, len(prompt), len(trajectory))
        if room <= 0:
            end = "length"
            break
        turn_request = dataclasses.replace(
            request, prompt_token_ids=prompt + trajectory.token_ids, max_tokens=room, seed=turn_seed(request.seed, turn)
        )
        try:
            (sample,) = await _before(deadline, deps, deps.generate(f"{episode_id}-t{turn}", turn_request, 1))
        except _TimeUp:
            end = "timeout"  # the turn in flight is dropped whole: the trajectory ends where it was
            break
        if sample.token_ids and version is not None and sample.weight_version != version:
            end = "abort"  # a weight update landed between turns: one episode, one policy
            break
        version = version or sample.weight_version
        turns += 1
        trajectory.add_sampled(sample.token_ids, sample.logprobs)
        if sample.finish_reason == "abort":
            end = "abort"
            break
        (text,) = await deps.offload(deps.decode, [sample.token_ids])
        content, calls = parse_tool_calls(text)
        if sample.finish_reason == "length":
            messages.append(EpisodeMessage("assistant", content))
            end = "length"
            break
        if not calls:
            messages.append(EpisodeMessage("assistant", content))
            end, final_text = "answer", content
            break
        ids = [f"call_{len(records) + i}" for i in range(len(calls))]
        messages.append(EpisodeMessage("assistant", content, tuple(ids)))
        if turn == params.max_turns - 1:
            end = "max_turns"  # the last allowed turn's calls are not run
            break
        left_in_episode = max(0, deps.max_calls_per_episode - calls_run)
        allowed = min(deps.max_calls_per_turn, left_in_episode)
        calls_run += min(allowed, len(calls))
        running = [asyncio.ensure_future(_run_call(deps, params, call, episode_id)) for call in calls[:allowed]]
        try:
            outcomes = await _before(deadline, deps, asyncio.gather(*running))
        except _TimeUp:
            end = "timeout"
            outcomes = [_finished_or_cut(task) for task in running]
        outcomes += [_refused(deps, left_in_episode <= deps.max_calls_per_turn)] * (len(calls) - allowed)
        tool_messages = []
        for call_id, call, (output, is_error, seconds) in zip(ids, calls, outcomes, strict=True):
            records.append(ToolCallRecord(call_id, turn, call.name, arguments_text(call), output, is_error, seconds))
            messages.append(EpisodeMessage("tool", output, (call_id,)))
            tool_messages.append({"role": "tool", "content": output, "name": call.name, "tool_call_id": call_id})
        if end == "timeout":
            break  # the calls are on record; no further turn, so their results are not inserted
        ended_with_eos = bool(sample.token_ids) and sample.token_ids[-1] == deps.eos_token_id
        inserted = await deps.offload(deps.render_tool_turn, tool_messages, ended_with_eos)
        if deps.clock() >= deadline:
            end = "timeout"
            break
        if turn_room(request.max_tokens, deps.max_model_len, len(prompt), len(trajectory)) <= len(inserted):
            end = "length"  # no room for the tool results and one more token
            break
        trajectory.add_inserted(inserted)
    outcome = EpisodeOutcome(
        token_mask=trajectory.mask,
        turns=turns,
        end=end,
        tool_calls=records,
        messages=messages,
        final_text=final_text,
    )
    return EpisodeRun(trajectory, outcome, version, final_text)


EPISODE_TIME_UP = "error: the episode's time limit ran out before this tool call finished"


def _finished_or_cut(task: asyncio.Future) -> tuple[str, bool, float]:
    """A call's outcome when the episode's time ran out: its own if it had finished."""
    if task.done() and not task.cancelled() and task.exception() is None:
        return task.result()
    return EPISODE_TIME_UP, True, 0.0


def _refused(deps: EpisodeDeps, episode_cap: bool) -> tuple[str, bool, float]:
    """The outcome of a call past the per-episode cap (`episode_cap`) or the per-turn one: not run."""
    if episode_cap:
        return f"error: not run: an episode may make at most {deps.max_calls_per_episode} tool calls", True, 0.0
    return f"error: not run: a turn may make at most {deps.max_calls_per_turn} tool calls", True, 0.0


async def _run_call(deps: EpisodeDeps, params: EpisodeParams, call: ParsedCall, episode_id: str):
    """(output shown to the model, is_error, seconds) of one parsed call."""
    if call.arguments is None:
        return f"error: {call.error}", True, 0.0
    outcome = await deps.call_tool(params.tool_servers, call.name, call.arguments, episode_id)
    return outcome.output, outcome.is_error, outcome.latency_seconds
