"""Tool-using evaluations without services: what the grader gets of an episode
(rft_common.episodes, shared by the learner's validation, `rft evals run` and the HTTP
API), the episode metrics of a run, and its output items, checked by hand."""

from __future__ import annotations

import asyncio
import json

import pytest
from google.protobuf import json_format
from rft.rollout.v1 import rollout_pb2
from rft_common.episodes import (
    episode_chat_messages,
    episode_ends,
    episode_json,
    episode_metrics,
    episode_params,
    episode_sample_output,
    grader_sample,
)
from rft_learner.evaluations import Answers, Graded, RunTotals, SamplingSettings, evaluate_rows, output_item
from rft_learner.remote import GeneratedSample
from rft_learner.remote import grader_sample as learner_grader_sample


def _episode(answer: str = "42", error: bool = False, end=rollout_pb2.EPISODE_END_ANSWER) -> rollout_pb2.Episode:
    return rollout_pb2.Episode(
        token_mask=[1, 1, 0, 0, 1],
        turns=2,
        end=end,
        tool_calls=[
            rollout_pb2.ToolCall(
                id="call_0", turn=0, name="add", arguments_json='{"a": 17, "b": 25}', output=answer, is_error=error
            )
        ],
        messages=[
            rollout_pb2.EpisodeMessage(role="assistant", content="", tool_call_ids=["call_0"]),
            rollout_pb2.EpisodeMessage(role="tool", content=answer, tool_call_ids=["call_0"]),
            rollout_pb2.EpisodeMessage(role="assistant", content=answer),
        ],
        final_text=answer,
    )


def test_the_grader_sees_the_final_answer_the_tool_calls_and_the_messages() -> None:
    output = json_format.MessageToDict(episode_sample_output('{"sum": 42}', _episode()))
    assert output["outputText"] == '{"sum": 42}' and output["outputJson"] == {"sum": 42.0}
    assert output["outputTools"] == [
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'},
            "output": "42",
            "is_error": False,
        }
    ]
    assert output["outputMessages"] == [
        {"role": "assistant", "content": "", "tool_calls": ["call_0"]},
        {"role": "tool", "content": "42", "tool_call_id": "call_0"},
        {"role": "assistant", "content": "42", "tool_calls": []},
    ]
    # The learner's validation and the evaluations build the very same message.
    sample = rollout_pb2.Sample(text="42", episode=_episode())
    learner = learner_grader_sample(GeneratedSample(0, "42", [], [], 1, 0, _episode()))
    assert grader_sample(sample) == learner
    assert grader_sample(rollout_pb2.Sample(text="7")).output_text == "7"
    assert not grader_sample(rollout_pb2.Sample(text="7")).output_tools


def test_episode_params_as_a_job_builds_them() -> None:
    assert episode_params(0, []) is None and episode_params(1, []) is None
    assert episode_params(3, ["calc"], "alice") == rollout_pb2.EpisodeParams(
        max_turns=3, tool_servers=["calc"], tenant="alice"
    )
    assert episode_params(1, ["calc"]).max_turns == 1


def test_episode_json_and_chat_messages() -> None:
    record = episode_json(_episode())
    assert record["turns"] == 2 and record["end"] == "answer"
    assert record["tool_calls"][0] == {
        "id": "call_0",
        "turn": 0,
        "name": "add",
        "arguments": '{"a": 17, "b": 25}',
        "output": "42",
        "is_error": False,
        "latency_seconds": 0.0,
    }
    assert episode_chat_messages(_episode()) == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "42", "name": "add"},
        {"role": "assistant", "content": "42"},
    ]
    ends = episode_ends([_episode(), _episode(end=rollout_pb2.EPISODE_END_MAX_TURNS), _episode()])
    assert ends == {"answer": 2, "max_turns": 1}


def _record(answer: str, error: bool = False) -> dict:
    episode = _episode(answer, error)
    return {**episode_json(episode), "messages": episode_chat_messages(episode)}


def test_a_tool_using_run_grades_episodes_and_counts_their_metrics() -> None:
    rows = [{"messages": [{"role": "user", "content": f"add {i} 1"}], "answer": str(i + 1)} for i in range(3)]
    graded_inputs = []

    async def sample(messages, n, temperature, seed):
        index = int(messages[0]["content"].split()[1])
        answers = [str(index + 1)] * n
        episodes = [_record(a, error=(temperature > 0 and j == 0)) for j, a in enumerate(answers)]
        return Answers(
            answers,
            ["stop"] * n,
            graded_as=[episode_sample_output(a, _episode(a)) for a in answers],
            episodes=episodes,
        )

    async def grade(pairs):
        graded_inputs.extend(pairs)
        return [Graded(1.0 if s.output_tools[0]["output"] == item["answer"] else 0.0, True) for s, item in pairs]

    chunks = []

    async def on_chunk(results):
        chunks.append(results)

    settings = SamplingSettings(2, 1.0, 1.0, 64, 0, max_turns=3, tool_servers=("calc",))
    assert settings.episodic and not SamplingSettings(2, 1.0, 1.0, 64, 0).episodic
    asyncio.run(evaluate_rows(rows, sample, grade, settings, on_chunk))
    assert len(graded_inputs) == 3 * 3 and all(not isinstance(s, str) for s, _ in graded_inputs)
    (results,) = chunks
    totals = RunTotals(2)
    for r in results:
        totals.add(r.greedy, r.samples, r.sample_episodes)
    metrics = totals.metrics()
    # 6 sampled episodes of 2 turns and 1 call each; the first sample of each row erred.
    assert metrics["episode_turns_mean"] == 2.0 and metrics["tool_calls_mean"] == 1.0
    assert metrics["tool_error_rate"] == pytest.approx(3 / 6)
    assert metrics["episode_end.answer"] == 6.0 and metrics["reward_mean"] == 1.0
    # The learner's per-step formula gives the same numbers.
    episodes = [_episode(str(i + 1), error=j == 0) for i in range(3) for j in range(2)]
    step = episode_metrics(episodes)
    for name in ("episode_turns_mean", "tool_calls_mean", "tool_error_rate"):
        assert metrics[name] == pytest.approx(step[name])

    item = output_item(results[1], 2, {"name": "called", "type": "string_check"}, "tool", settings)
    roles = [m["role"] for m in item["sample"]["output"]]
    assert roles == ["assistant", "tool", "assistant"]
    assert item["sample"]["output"][1] == {"role": "tool", "tool_call_id": "call_0", "content": "2", "name": "add"}
    assert item["greedy"]["episode"]["end"] == "answer" and item["samples"][0]["episode"]["tool_calls"][0]["is_error"]
    json.dumps(item, allow_nan=False)


def test_a_single_turn_run_has_no_episode_fields() -> None:
    totals = RunTotals(1)
    totals.add(Graded(1.0, True), [Graded(1.0, True)])
    assert not any(name.startswith(("episode", "tool")) for name in totals.metrics())
