"""`rft evals run` on a tool-using model, with real parts: an rft-rollout (vLLM) serving
models/tool-base (it calls `add` for "add 17 25" and three other prompts, see
scripts/build_tool_model.py), the demo's MCP calculator (examples/agents/calculator_mcp.py)
started by the rollout over stdio, and the real grader."""

from __future__ import annotations

import json
import pathlib
import sys

import grpc
import pytest
from cli_helpers import write_json, write_jsonl
from rft.common.v1 import common_pb2
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_common.episodes import episode_metrics, episode_params, grader_sample
from service_process import ServiceProcess

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOL_MODEL = REPO / "models" / "tool-base"
CALCULATOR = REPO / "examples" / "agents" / "calculator_mcp.py"
PAIRS = ((17, 25), (3, 4), (60, 9), (8, 80))
MAX_EPISODE_TURNS = 4
# Passes only when the episode called `add`, the calculator's result was the answer, and
# the final answer (output_text) is that number: the grader sees the tool calls.
TOOL_GRADER = {
    "type": "string_check",
    "name": "called_add",
    "input": "{{sample.output_tools.0.function.name}}={{sample.output_tools.0.output}};{{sample.output_text}}",
    "reference": "add={{item.answer}};{{item.answer}}",
    "operation": "eq",
}
ANSWER_GRADER = {
    "type": "string_check",
    "name": "answer",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def _tool_servers_file(directory: pathlib.Path) -> pathlib.Path:
    servers = [{"name": "calc", "kind": "mcp_stdio", "target": sys.executable, "args": [str(CALCULATOR)]}]
    return write_json(directory / "tool-servers.json", {"servers": servers})


def _rows() -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"add {a} {b}"}], "answer": str(a + b)} for a, b in PAIRS]


@pytest.fixture(scope="module")
def tool_rollout(tmp_path_factory):
    """One rollout for the module's tests that name it with --rollout."""
    tools = _tool_servers_file(tmp_path_factory.mktemp("tools"))
    args = ["--model", str(TOOL_MODEL), "--tool-servers-file", str(tools), "--warmup-requests", "2"]
    args += ["--max-model-len", "512", "--max-episode-turns", str(MAX_EPISODE_TURNS)]
    with ServiceProcess("rft-rollout", args, ready_timeout=240) as proc:
        yield proc


@pytest.fixture
def files(tmp_path):
    valid = write_jsonl(tmp_path / "valid.jsonl", _rows())
    return valid, write_json(tmp_path / "tools.json", TOOL_GRADER), write_json(tmp_path / "answer.json", ANSWER_GRADER)


def _direct_episodes(address: str, max_turns: int, max_tokens: int) -> list[rollout_pb2.Sample]:
    """The greedy episodes of the rows, asked of the rollout directly."""
    prompts = [
        rollout_pb2.Prompt(chat=rollout_pb2.ChatPrompt(messages=[common_pb2.ChatMessage(**m) for m in r["messages"]]))
        for r in _rows()
    ]
    request = rollout_pb2.GenerateRequest(
        prompts=prompts,
        sampling=rollout_pb2.SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens),
        episode=episode_params(max_turns, ["calc"]),
    )
    with grpc.insecure_channel(address) as channel:
        response = rollout_pb2_grpc.RolloutServiceStub(channel).Generate(request, timeout=300)
    return [result.samples[0] for result in response.results]


def _grade(address: str, spec: dict, samples: list[rollout_pb2.Sample]) -> list[grader_pb2.GradeResult]:
    request = grader_pb2.GradeRequest()
    request.spec.update(spec)
    for sample, row in zip(samples, _rows(), strict=True):
        item = grader_pb2.GradeItem(sample=grader_sample(sample))
        item.item.update({"answer": row["answer"]})
        request.items.append(item)
    with grpc.insecure_channel(address) as channel:
        return list(grader_pb2_grpc.GraderServiceStub(channel).Grade(request, timeout=120).results)


def test_episodes_call_the_calculator_and_match_the_grader(cli, cli_grader, tool_rollout, files) -> None:
    valid, tools_spec, _ = files
    args = ["evals", "run", "--file", str(valid), "--grader-spec", str(tools_spec), "--rollout", tool_rollout.address]
    args += [
        "--max-turns",
        "3",
        "--tool-servers",
        "calc",
        "--samples",
        "2",
        "--temperature",
        "0",
        "--max-tokens",
        "256",
    ]
    report = cli.json(*args, timeout=600)
    assert report["max_turns"] == 3 and report["tool_servers"] == ["calc"]
    (model,) = report["models"]
    metrics = model["metrics"]
    assert metrics["grader_errors"] == 0, metrics
    assert metrics["tool_calls_mean"] > 0 and metrics["episode_turns_mean"] >= 2, metrics
    assert metrics["tool_error_rate"] == 0.0
    assert model["episode_ends"] == {"answer": 2 * len(PAIRS)}  # the sampled episodes

    # The same episodes asked of the rollout directly and graded directly (greedy: the
    # samples at temperature 0 are the greedy episodes) give the CLI's numbers.
    episodes = _direct_episodes(tool_rollout.address, 3, 256)
    results = _grade(cli_grader.address, TOOL_GRADER, episodes)
    assert not any(r.HasField("error") for r in results)
    scores = [r.score for r in results]
    assert metrics["greedy_reward_mean"] == pytest.approx(sum(scores) / len(scores))
    assert metrics["reward_mean"] == pytest.approx(sum(scores) / len(scores))
    assert metrics["greedy_pass@1"] == pytest.approx(sum(r.passed for r in results) / len(results))
    expected = episode_metrics([s.episode for s in episodes])
    for name in ("episode_turns_mean", "tool_calls_mean", "tool_error_rate"):
        assert metrics[name] == pytest.approx(expected[name]), name
    assert sum(scores) > 0  # the model does reach right answers through the tool

    # The table shows the tool columns and the end reasons.
    table = cli(*[a for a in args], timeout=600)
    assert table.returncode == 0, table.stderr
    assert "TOOL_CALLS_MEAN" in table.stdout and "EPISODE_TURNS_MEAN" in table.stdout
    assert "ended by answer 8" in table.stdout


def test_without_max_turns_answers_are_single_turn_as_before(cli, tool_rollout, files) -> None:
    valid, _, answer_spec = files
    args = ["evals", "run", "--file", str(valid), "--grader-spec", str(answer_spec), "--rollout", tool_rollout.address]
    report = cli.json(*args, "--samples", "1", "--temperature", "0", "--max-tokens", "96", timeout=600)
    assert "max_turns" not in report and "tool_servers" not in report
    (model,) = report["models"]
    assert "episode_ends" not in model
    assert not {"tool_calls_mean", "episode_turns_mean", "tool_error_rate"} & set(model["metrics"])
    # One turn: the model's answer is its tool call, never run, so it is not the sum.
    assert model["metrics"]["greedy_reward_mean"] == 0.0
    table = cli(*args, "--samples", "1", "--temperature", "0", "--max-tokens", "96", timeout=600)
    assert table.returncode == 0 and "TOOL_CALLS_MEAN" not in table.stdout


def test_unknown_tool_servers_and_too_many_turns_are_refused(cli, tool_rollout, files) -> None:
    valid, tools_spec, _ = files
    base = ["evals", "run", "--file", str(valid), "--grader-spec", str(tools_spec), "--rollout", tool_rollout.address]
    unknown = cli(*base, "--max-turns", "2", "--tool-servers", "calc,nope")
    assert unknown.returncode == 1, unknown.stderr
    assert "unknown tool server nope" in unknown.stderr and "offers calc" in unknown.stderr, unknown.stderr
    too_many = cli(*base, "--max-turns", str(MAX_EPISODE_TURNS + 1), "--tool-servers", "calc")
    assert too_many.returncode == 1, too_many.stderr
    assert f"above the rollout's limit of {MAX_EPISODE_TURNS}" in too_many.stderr, too_many.stderr
    one_turn = cli(*base, "--tool-servers", "calc")
    assert one_turn.returncode == 2 and "--tool-servers needs --max-turns 2 or more" in one_turn.stderr
    empty = cli(*base, "--tool-servers", ",")
    assert empty.returncode == 2 and "--tool-servers" in empty.stderr
    elsewhere = cli(*base, "--tool-servers", "calc", "--rollout-tool-servers-file", str(tools_spec))
    assert elsewhere.returncode == 2 and "--rollout-tool-servers-file" in elsewhere.stderr


def _export_like_the_learner(out: pathlib.Path) -> pathlib.Path:
    """models/tool-base written as a job's fine-tuned model is (trainer.checkpoint.save_model_dir)."""
    from rft_learner.trainer import checkpoint
    from rft_learner.trainer.policy import load_model, load_tokenizer

    checkpoint.save_model_dir(load_model(TOOL_MODEL), load_tokenizer(TOOL_MODEL), out)
    return out


def test_an_exported_tool_model_keeps_its_chat_template_and_runs_episodes(cli, files, tmp_path) -> None:
    """Export keeps the tokenizer files with the chat template the rollout renders tool
    turns with; the exported model, on a temporary rollout given the tool servers file,
    runs episodes that call the calculator."""
    from transformers import AutoTokenizer

    exported = _export_like_the_learner(tmp_path / "exported")
    conversation = [
        {"role": "user", "content": "add 17 25"},
        {"role": "assistant", "content": '<tool_call>{"name": "add", "arguments": {"a": 17, "b": 25}}</tool_call>'},
        {"role": "tool", "content": "42", "name": "add", "tool_call_id": "call_0"},
    ]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]

    def rendered(directory: pathlib.Path) -> str:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return tokenizer.apply_chat_template(conversation, tools=tools, add_generation_prompt=True, tokenize=False)

    assert rendered(exported) == rendered(TOOL_MODEL)
    assert "<|im_start|>tool\n42<|im_end|>" in rendered(exported)

    valid, tools_spec, _ = files
    args = ["evals", "run", "--file", str(valid), "--grader-spec", str(tools_spec), "--limit", "2"]
    args += ["--max-turns", "2", "--tool-servers", "calc", "--samples", "1", "--temperature", "0"]
    args += ["--max-tokens", "256", "--rollout-tool-servers-file", str(_tool_servers_file(tmp_path))]
    args += ["--ready-timeout", "300", "--rollout-args", "--max-model-len 512 --warmup-requests 1", str(exported)]
    report = cli.json(*args, timeout=600)
    (model,) = report["models"]
    assert model["model"] == str(exported)
    assert model["metrics"]["tool_calls_mean"] > 0 and model["metrics"]["grader_errors"] == 0
    assert model["metrics"]["greedy_reward_mean"] > 0  # right answers through the calculator
    assert model["episode_ends"] == {"answer": 2}
    json.dumps(report)  # plain JSON


PYTHON_TOOLS = """
def add(a: int, b: int) -> str:
    \"\"\"Add two integers.\"\"\"
    return str(a + b)
"""


def test_python_tools_run_in_the_graders_sandbox_for_a_rollout_it_starts(cli, cli_grader, files, tmp_path) -> None:
    """--python-tools and no tool servers file: the rollout this command starts gets a
    grader_python server reaching this command's grader, and the episodes' `add` calls
    run there (the only tool there is), giving the right answers."""
    valid, tools_spec, _ = files
    source = tmp_path / "tools.py"
    source.write_text(PYTHON_TOOLS)
    args = ["evals", "run", str(TOOL_MODEL), "--file", str(valid), "--grader-spec", str(tools_spec)]
    args += ["--python-tools", str(source), "--max-turns", "3", "--samples", "1", "--temperature", "0"]
    args += ["--max-tokens", "256", "--rollout-args", f"--max-model-len 512 --max-episode-turns {MAX_EPISODE_TURNS}"]
    report = cli.json(*args, timeout=900)
    assert report["python_tools"] == str(source)
    (model,) = report["models"]
    metrics = model["metrics"]
    assert metrics["grader_errors"] == 0, metrics
    assert metrics["tool_calls_mean"] > 0 and metrics["tool_error_rate"] == 0.0, metrics
    assert metrics["greedy_reward_mean"] > 0, metrics  # add=<answer>;<answer> for some rows


def test_python_tools_need_a_grader_python_server_and_two_turns(cli, tool_rollout, files, tmp_path) -> None:
    valid, tools_spec, _ = files
    source = tmp_path / "tools.py"
    source.write_text(PYTHON_TOOLS)
    base = ["evals", "run", "--file", str(valid), "--grader-spec", str(tools_spec), "--python-tools", str(source)]
    missing = cli(*base, "--rollout", tool_rollout.address, "--max-turns", "2")
    assert missing.returncode == 1 and "no grader_python tool server" in missing.stderr, missing.stderr
    one_turn = cli(*base, "--rollout", tool_rollout.address)
    assert one_turn.returncode == 2 and "--max-turns 2 or more" in one_turn.stderr, one_turn.stderr
