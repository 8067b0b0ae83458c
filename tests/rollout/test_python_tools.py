"""Python tools end to end (issue #17 c): a real rft-rollout (vLLM) serving models/tool-base
(it calls `add` for "add 17 25") with a grader_python tool server, and a real rft-grader
whose sandbox runs the episode's Python source. Also ToolBox against that grader without
an engine: descriptions cached, failures as tool errors, configuration refused early."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re

import grpc
import pytest
from rft.common.v1 import common_pb2
from rft.rollout.v1 import rollout_pb2
from rollout_helpers import stub
from service_process import ServiceProcess

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOL_MODEL = REPO / "models" / "tool-base"
TOKEN = "op-token-python-tools"
TOOL_TURN = "\n<|im_start|>tool\n{}<|im_end|>\n<|im_start|>assistant\n"

SOURCE = '''
CALLS = []


def add(a: int, b: int) -> str:
    """Add two integers."""
    CALLS.append((a, b))
    return f"{a} + {b} = {a + b} (python, call {len(CALLS)})"
'''
FAILING = '''
def add(a: int, b: int) -> int:
    """Add two integers, badly."""
    return {"sum": a + b}["total"]
'''


def server_config(grader: ServiceProcess, **extra) -> dict:
    return {
        "name": "python",
        "kind": "grader_python",
        "target": grader.address,
        "headers": {"authorization": f"Bearer {TOKEN}"},
        "allowed_tenants": ["*"],
        **extra,
    }


@pytest.fixture(scope="module")
def grader(tmp_path_factory):
    args = ["--data-dir", str(tmp_path_factory.mktemp("grader")), "--auth-token", TOKEN]
    args += ["--sandbox-timeout-seconds", "10", "--sandbox-memory-bytes", str(256 * 1024**2)]
    with ServiceProcess("rft-grader", args) as proc:
        yield proc


@pytest.fixture(scope="module")
def python_rollout(grader, tmp_path_factory):
    config = tmp_path_factory.mktemp("tools") / "tool-servers.json"
    config.write_text(json.dumps({"servers": [server_config(grader, timeout_seconds=20)]}))
    args = ["--model", str(TOOL_MODEL), "--tool-servers-file", str(config), "--warmup-requests", "2"]
    args += ["--max-model-len", "512", "--max-episode-turns", "4"]
    with ServiceProcess("rft-rollout", args, ready_timeout=240) as proc, proc.channel() as channel:
        yield stub(channel)


def episode(rollout_stub, source: str, servers=(), prompt: str = "add 17 25", max_turns: int = 3):
    request = rollout_pb2.GenerateRequest(
        prompts=[
            rollout_pb2.Prompt(
                chat=rollout_pb2.ChatPrompt(messages=[common_pb2.ChatMessage(role="user", content=prompt)])
            )
        ],
        sampling=rollout_pb2.SamplingParams(max_tokens=256, temperature=0.0),
        episode=rollout_pb2.EpisodeParams(max_turns=max_turns, tool_servers=list(servers), python_tools_source=source),
    )
    return rollout_stub.Generate(request, timeout=120).results[0].samples[0]


# ---------------------------------------------------------------- with the engine


def test_an_episode_calls_a_python_tool_in_the_graders_sandbox(python_rollout) -> None:
    from transformers import AutoTokenizer

    sample = episode(python_rollout, SOURCE)
    ep = sample.episode
    (call,) = ep.tool_calls
    # The module runs afresh for every call: its state does not carry over ("call 1").
    expected = "17 + 25 = 42 (python, call 1)"
    assert (call.name, call.output, call.is_error) == ("add", expected, False)
    assert json.loads(call.arguments_json) == {"a": 17, "b": 25}
    assert ep.turns == 2 and [m.role for m in ep.messages] == ["assistant", "tool", "assistant"]
    assert ep.messages[1].content == expected
    # The tool message the model read is the chat template's tool turn around that text.
    tokenizer = AutoTokenizer.from_pretrained(TOOL_MODEL)
    mask, ids = list(ep.token_mask), list(sample.token_ids)
    first = mask.index(0)
    inserted = mask[first:].index(1)
    assert ids[first : first + inserted] == tokenizer.encode(TOOL_TURN.format(expected), add_special_tokens=False)
    again = episode(python_rollout, SOURCE, prompt="add 3 4")  # the cached description serves again
    assert again.episode.tool_calls[0].output == "3 + 4 = 7 (python, call 1)"


def test_a_failing_python_tool_is_a_tool_error_and_the_episode_goes_on(python_rollout) -> None:
    ep = episode(python_rollout, FAILING, servers=["python"]).episode
    (call,) = ep.tool_calls
    assert call.is_error and call.output.startswith("error: KeyError: 'total' (line 4)"), call.output
    assert ep.turns == 2


def test_a_source_that_does_not_describe_is_refused_before_generating(python_rollout) -> None:
    with pytest.raises(grpc.RpcError) as error:
        episode(python_rollout, "def add(a, b):\n    return a +\n")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "python_tools_source" in error.value.details() and "line 2" in error.value.details()


def test_model_info_lists_the_grader_python_server(python_rollout) -> None:
    info = python_rollout.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30)
    assert [(s.name, s.kind, list(s.tools)) for s in info.tool_servers] == [("python", "grader_python", [])]


# ---------------------------------------------------------------- ToolBox, no engine


def test_tool_box_describes_once_and_turns_failures_into_tool_errors(grader) -> None:
    from rft_rollout.domain import EpisodeParams, InvalidRequest
    from rft_rollout.tool_servers import ToolServerConfig, open_tool_box

    async def run() -> None:
        configs = [
            ToolServerConfig.model_validate(server_config(grader, timeout_seconds=2, max_output_bytes=64)),
        ]
        source = (
            SOURCE
            + "\ndef spin() -> str:\n    while True:\n        pass\n\ndef shout() -> str:\n    return 'A' * 999\n"
        )
        async with open_tool_box(configs) as box:
            params = EpisodeParams(2, (), "default", source)
            (described,) = {tuple(t.name for t in await box.python_tools(params)) for _ in range(3)}
            assert described == ("add", "spin", "shout")
            call = box.caller(params)
            outcome = await call((), "add", {"a": 1, "b": 2}, "ep-1")
            assert (outcome.output, outcome.is_error) == ("1 + 2 = 3 (python, call 1)", False)
            outcome = await call((), "spin", {}, "ep-1")
            # The grader stops it at the call's deadline (or the rollout's timeout ends the wait).
            assert outcome.is_error and outcome.latency_seconds < 3
            assert re.fullmatch(
                r"error: tool (ran longer than the 1\.9\d* s wall-clock limit|'spin' timed out after 2 s)",
                outcome.output,
            )
            outcome = await call((), "shout", {}, "ep-1")
            assert not outcome.is_error and outcome.output.endswith("[output truncated]")
            assert len(outcome.output.encode()) <= 64
            outcome = await call((), "add", {"a": "x"}, "ep-1")
            assert outcome.is_error and "TypeError" in outcome.output
            outcome = await call((), "subtract", {}, "ep-1")
            assert outcome.is_error and outcome.output.startswith("error: unknown tool 'subtract'")
            assert "'add'" in outcome.output

            with pytest.raises(InvalidRequest, match="line 1"):
                await box.python_tools(EpisodeParams(2, (), "default", "def broken(:\n"))

        # A grader that refuses the rollout's credential fails the start-up (the operator's error).
        wrong = server_config(grader, headers={"authorization": "Bearer nope"})
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async with open_tool_box([ToolServerConfig.model_validate(wrong)]):
                pass
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED

        async with open_tool_box([]) as empty:
            with pytest.raises(InvalidRequest, match="grader_python"):
                await empty.python_tools(EpisodeParams(2, (), "default", SOURCE))

    asyncio.run(run())


def test_plaintext_credentials_to_a_remote_grader_are_refused() -> None:
    from rft_rollout.tool_servers import ToolServerConfig

    with pytest.raises(ValueError, match="tls_ca_file"):
        ToolServerConfig.model_validate(
            {"name": "p", "kind": "grader_python", "target": "grader.example:50052", "headers": {"authorization": "x"}}
        )
