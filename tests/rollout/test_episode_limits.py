"""The episode loop's limits, with a scripted engine and scripted tools standing in at the
engine and tool boundaries (the loop is what is under test): tool calls per turn and per
episode, and the episode's wall-clock deadline, in a tool call and in a turn."""

from __future__ import annotations

import asyncio
import functools
import json
import types

import pytest
from rft_rollout.domain import EngineSample, EpisodeParams, SampleRequest
from rft_rollout.episodes import EPISODE_TIME_UP, EpisodeDeps, run_episode
from rft_rollout.tool_servers import ToolOutcome

EOS = 2
INSERTED = [90, 91]  # what the stand-in template writes for any tool turn


def call_text(*names: str) -> str:
    return "".join(f'<tool_call>{{"name": "{name}", "arguments": {{}}}}</tool_call>' for name in names)


class Script:
    """Turn texts in order (one token per character, so decode is exact), the calls the
    tools saw, and which calls were cancelled."""

    def __init__(self, turns: list[str], tool_seconds: float = 0.0, turn_seconds: float = 0.0) -> None:
        self.turns = turns
        self.tool_seconds = tool_seconds
        self.turn_seconds = turn_seconds
        self.called: list[str] = []
        self.cancelled_calls: list[str] = []
        self.cancelled_turns = 0
        self.turn = 0

    async def generate(self, request_id: str, request: SampleRequest, n: int) -> list[EngineSample]:
        text = self.turns[min(self.turn, len(self.turns) - 1)]
        self.turn += 1
        try:
            await asyncio.sleep(self.turn_seconds)
        except asyncio.CancelledError:
            self.cancelled_turns += 1
            raise
        ids = [ord(c) for c in text] + [EOS]
        return [EngineSample(None, ids, [-0.5] * len(ids), "stop", "0", None)]

    @staticmethod
    def decode(batch: list[list[int]]) -> list[str]:
        return ["".join(chr(t) for t in ids if t != EOS) for ids in batch]

    async def call_tool(self, servers, name: str, arguments: dict, episode_id: str) -> ToolOutcome:
        self.called.append(name)
        try:
            await asyncio.sleep(self.tool_seconds)
        except asyncio.CancelledError:
            self.cancelled_calls.append(name)
            raise
        return ToolOutcome(f"{name} ok", False, self.tool_seconds)

    def deps(self, **limits) -> EpisodeDeps:
        async def offload(function, *args):
            return function(*args)

        return EpisodeDeps(
            generate=self.generate,
            decode=self.decode,
            render_tool_turn=lambda messages, ended_with_eos: list(INSERTED),
            offload=offload,
            call_tool=self.call_tool,
            eos_token_id=EOS,
            max_model_len=100_000,
            **limits,
        )


def synchronously(test):
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


def request() -> SampleRequest:
    return SampleRequest([1, 3], 1.0, 1.0, -1, 10_000, (), (), 7)


def outputs(run) -> list[tuple[str, str, bool]]:
    return [(c.name, c.output, c.is_error) for c in run.outcome.tool_calls]


@synchronously
async def test_calls_past_the_per_turn_cap_are_not_run_and_each_gets_an_error() -> None:
    script = Script([call_text("a", "b", "c"), "42"])
    run = await run_episode(script.deps(max_calls_per_turn=2), "ep", request(), EpisodeParams(4, ("s",)))
    assert script.called == ["a", "b"]  # c never reached the tool server
    assert outputs(run) == [
        ("a", "a ok", False),
        ("b", "b ok", False),
        ("c", "error: not run: a turn may make at most 2 tool calls", True),
    ]
    # the model saw an answer for each of its three calls, and went on to answer
    assert [m.role for m in run.outcome.messages] == ["assistant", "tool", "tool", "tool", "assistant"]
    assert run.outcome.end == "answer" and run.outcome.final_text == "42"


@synchronously
async def test_calls_past_the_per_episode_cap_are_not_run() -> None:
    script = Script([call_text("a", "b"), call_text("c", "d"), "done"])
    run = await run_episode(script.deps(max_calls_per_episode=3), "ep", request(), EpisodeParams(5, ("s",)))
    assert script.called == ["a", "b", "c"]
    assert outputs(run)[-1] == ("d", "error: not run: an episode may make at most 3 tool calls", True)
    assert run.outcome.end == "answer" and run.outcome.turns == 3


@synchronously
async def test_only_calls_that_ran_count_against_the_episode_cap() -> None:
    """Per turn 2, per episode 3: a turn of five calls runs two (three refused by the turn's
    cap, not counted), the next turn's two calls run one more (the episode's third) and
    refuse the other by the episode's cap."""
    script = Script([call_text("a", "b", "c", "d", "e"), call_text("f", "g"), "done"])
    deps = script.deps(max_calls_per_turn=2, max_calls_per_episode=3)
    run = await run_episode(deps, "ep", request(), EpisodeParams(5, ("s",)))
    assert script.called == ["a", "b", "f"]
    turn_cap = "error: not run: a turn may make at most 2 tool calls"
    episode_cap = "error: not run: an episode may make at most 3 tool calls"
    assert [o for _, o, _ in outputs(run)] == ["a ok", "b ok", turn_cap, turn_cap, turn_cap, "f ok", episode_cap]


@synchronously
async def test_the_time_limit_counts_from_when_the_request_arrived() -> None:
    """An episode whose request arrived a whole time limit ago (its checks took that long)
    samples nothing."""
    script = Script(["x"])
    deps = script.deps(timeout_seconds=5.0)
    run = await run_episode(deps, "ep", request(), EpisodeParams(2, ()), started=deps.clock() - 5.0)
    assert run.outcome.end == "timeout" and run.outcome.turns == 0 and script.turn == 0


@synchronously
async def test_the_deadline_cancels_a_tool_call_in_flight_and_ends_the_episode() -> None:
    script = Script([call_text("slow"), "never reached"], tool_seconds=30.0)
    started = asyncio.get_running_loop().time()
    run = await run_episode(script.deps(timeout_seconds=0.3), "ep", request(), EpisodeParams(4, ("s",)))
    assert asyncio.get_running_loop().time() - started < 10  # not the tool's 30 s
    assert script.cancelled_calls == ["slow"]  # the call was cancelled, not left running
    assert run.outcome.end == "timeout" and run.outcome.turns == 1
    assert outputs(run) == [("slow", EPISODE_TIME_UP, True)]
    # The trajectory ends with the turn that made the call: no tool turn was inserted
    # (there is no next turn to read it), so every token is a sampled one.
    assert run.trajectory.mask == [1] * len(run.trajectory.token_ids)
    assert script.decode([run.trajectory.token_ids]) == [call_text("slow")]


@synchronously
async def test_the_deadline_aborts_a_turn_in_flight_and_keeps_the_earlier_turns() -> None:
    script = Script([call_text("fast"), "slow answer"])
    deps = script.deps(timeout_seconds=0.5)

    async def generate(request_id, request, n):
        if script.turn == 1:
            script.turn_seconds = 30.0  # the second turn hangs
        return await Script.generate(script, request_id, request, n)

    deps = EpisodeDeps(**{**deps.__dict__, "generate": generate})
    run = await run_episode(deps, "ep", request(), EpisodeParams(4, ("s",)))
    assert script.cancelled_turns == 1  # the engine request was cancelled (vLLM aborts it)
    assert run.outcome.end == "timeout" and run.outcome.turns == 1 and run.outcome.final_text == ""
    first = [ord(c) for c in call_text("fast")] + [EOS]
    assert run.trajectory.token_ids == first + INSERTED
    assert run.trajectory.mask == [1] * len(first) + [0] * len(INSERTED)


@synchronously
async def test_an_episode_out_of_time_before_its_first_turn_samples_nothing() -> None:
    script = Script(["x"], turn_seconds=5.0)
    run = await run_episode(script.deps(timeout_seconds=0.0001), "ep", request(), EpisodeParams(2, ()))
    assert run.outcome.end == "timeout" and run.outcome.turns == 0 and run.trajectory.token_ids == []
    assert json.dumps(outputs(run)) == "[]"


def test_a_chat_template_without_a_tool_role_is_refused_before_any_episode_runs(tmp_path) -> None:
    """The real tool-turn rendering on the demo tokenizer with a template that, like many
    base models' templates, raises on a tool message: a multi-turn request is refused up
    front, with the reason, instead of every episode failing at its first tool call."""
    import build_base_model
    from rft_rollout.core import RolloutCore, Settings
    from rft_rollout.domain import InvalidRequest, Limits, PromptInput, Sampling
    from rft_rollout.engine import tool_turn_ids
    from rft_rollout.model_spec import ModelDescription

    tokenizer = build_base_model.build_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('tool messages are not supported') }}"
        "{% endif %}{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}"
    )

    class TemplateOnly:  # the engine's tokenizer side; no generation is reached
        facts = types.SimpleNamespace(vocab_size=len(tokenizer), max_model_len=512, eos_token_id=tokenizer.eos_token_id)

        def render_tool_turn(self, messages, ended_with_eos):
            return tool_turn_ids(tokenizer, messages)

    settings = Settings("m", Limits(8, 8, 64, 64), 16, "", tmp_path)
    core = RolloutCore(TemplateOnly(), ModelDescription("Qwen2ForCausalLM", 0, 0, ()), settings)
    try:
        with pytest.raises(InvalidRequest) as caught:
            asyncio.run(core._plan([PromptInput(chat=())], Sampling(), EpisodeParams(2, ())))
        assert "cannot write tool results (tool messages are not supported)" in str(caught.value)
        assert "max_turns 1" in str(caught.value)
    finally:
        core.close()
