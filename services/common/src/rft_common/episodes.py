"""Tool-using episodes as the learner's validation and `rft evals run` see them: the
rollout's EpisodeParams, the grader's view of a sample (its final answer, tool calls and
messages) and the episode metrics. One implementation for both, so an evaluation from
the CLI or the HTTP API grades and counts exactly as a job's validation does."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rft.grader.v1 import grader_pb2
from rft.rollout.v1 import rollout_pb2

EPISODE_METRICS = ("episode_turns_mean", "tool_calls_mean", "tool_error_rate")
"""The episode metrics an evaluation reports (the learner's as valid_<name>)."""


def episode_params(
    max_turns: int, tool_servers: Iterable[str], tenant: str = "", python_tools_source: str = ""
) -> rollout_pb2.EpisodeParams | None:
    """The rollout's episode settings, or None for single-turn samples (max_turns <= 1,
    no tool servers and no Python tools), acting for `tenant` (whose tool servers the
    episodes may use, and whose sandbox runs the Python tools)."""
    servers = list(tool_servers)
    if max_turns <= 1 and not servers and not python_tools_source:
        return None
    return rollout_pb2.EpisodeParams(
        max_turns=max_turns, tool_servers=servers, tenant=tenant, python_tools_source=python_tools_source
    )


def sample_output(text: str) -> grader_pb2.SampleOutput:
    """The grader's view of a sample: its text and, when the text is a JSON object, that object."""
    output = grader_pb2.SampleOutput(output_text=text)
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            parsed = json.loads(stripped)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            output.output_json.update(parsed)
    return output


def episode_sample_output(text: str, episode: rollout_pb2.Episode) -> grader_pb2.SampleOutput:
    """What the grader sees of an episode: `text` (the sample's text, the final answer) as
    output_text / output_json, its tool calls (sample.output_tools, OpenAI's
    chat-completions format plus output and is_error) and its messages
    (sample.output_messages)."""
    output = sample_output(text)
    for call in episode.tool_calls:
        output.output_tools.append(
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
                "output": call.output,
                "is_error": call.is_error,
            }
        )
    for message in episode.messages:
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.role == "tool":
            entry["tool_call_id"] = message.tool_call_ids[0] if message.tool_call_ids else ""
        else:
            entry["tool_calls"] = list(message.tool_call_ids)
        output.output_messages.append(entry)
    return output


def grader_sample(sample: rollout_pb2.Sample) -> grader_pb2.SampleOutput:
    """The grader's view of a rollout Sample, an episode or a single-turn answer."""
    if sample.HasField("episode"):
        return episode_sample_output(sample.text, sample.episode)
    return sample_output(sample.text)


def episode_metrics(episodes: Sequence[rollout_pb2.Episode]) -> dict[str, float]:
    """Means over episodes (none: no metric): turns, tool calls, error rate
    (failed calls / calls; 0 without calls), call seconds (calls that took time), and
    sampled vs inserted tokens (episode.token_mask's 1s and 0s)."""
    if not episodes:
        return {}
    calls = [call for e in episodes for call in e.tool_calls]
    timed = [call.latency_seconds for call in calls if call.latency_seconds > 0]
    sampled = sum(sum(e.token_mask) for e in episodes)
    count = len(episodes)
    return {
        "episode_turns_mean": sum(e.turns for e in episodes) / count,
        "tool_calls_mean": len(calls) / count,
        "tool_error_rate": sum(call.is_error for call in calls) / len(calls) if calls else 0.0,
        "tool_seconds_mean": sum(timed) / len(timed) if timed else 0.0,
        "sampled_tokens_mean": sampled / count,
        "tool_tokens_mean": (sum(len(e.token_mask) for e in episodes) - sampled) / count,
    }


def end_name(end: int) -> str:
    """EPISODE_END_ANSWER -> "answer"."""
    try:
        return rollout_pb2.EpisodeEnd.Name(end).removeprefix("EPISODE_END_").lower()
    except ValueError:
        return str(end)


def episode_ends(episodes: Iterable[rollout_pb2.Episode]) -> dict[str, int]:
    """How many episodes ended for each reason ("answer", "max_turns", "length", ...)."""
    counts: dict[str, int] = {}
    for e in episodes:
        name = end_name(e.end)
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def episode_json(episode: rollout_pb2.Episode) -> dict[str, Any]:
    """An episode as JSON (what the HTTP API's eval output items show of each answer):
    turns, end reason, and every tool call with its result."""
    return {
        "turns": episode.turns,
        "end": end_name(episode.end),
        "tool_calls": [
            {
                "id": call.id,
                "turn": call.turn,
                "name": call.name,
                "arguments": call.arguments_json,
                "output": call.output,
                "is_error": call.is_error,
                "latency_seconds": call.latency_seconds,
            }
            for call in episode.tool_calls
        ],
    }


def episode_chat_messages(episode: rollout_pb2.Episode) -> list[dict[str, Any]]:
    """The episode after the prompt in OpenAI's chat-completions message format: assistant
    turns (with `tool_calls` when they made calls) and `tool` messages with the results."""
    calls = {call.id: call for call in episode.tool_calls}
    out: list[dict[str, Any]] = []
    for message in episode.messages:
        if message.role == "tool":
            call_id = message.tool_call_ids[0] if message.tool_call_ids else ""
            entry: dict[str, Any] = {"role": "tool", "tool_call_id": call_id, "content": message.content}
            if call_id in calls:
                entry["name"] = calls[call_id].name
            out.append(entry)
            continue
        entry = {"role": message.role, "content": message.content}
        if message.tool_call_ids:
            entry["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": calls[call_id].name if call_id in calls else "",
                        "arguments": calls[call_id].arguments_json if call_id in calls else "",
                    },
                }
                for call_id in message.tool_call_ids
            ]
        out.append(entry)
    return out
