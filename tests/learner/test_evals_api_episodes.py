"""Evaluation runs of a tool-using model over the HTTP API, with the official `openai`
package: sampling_params.max_turns / tool_servers (ours) make every answer an episode
run by a real rollout service (vLLM) that the learner starts for the run, with the
demo's MCP calculator (examples/agents/calculator_mcp.py) from the operator's
RFT_ROLLOUT_TOOL_SERVERS_FILE, graded by the real grader on the tool calls."""

from __future__ import annotations

import json
import pathlib
import sys
import time

import openai
import pytest
from jobs_client import learner_args, write_jsonl
from service_process import ServiceProcess
from tenant_keys import KEYS, write_keys_file

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOL_MODEL = REPO / "models" / "tool-base"
CALCULATOR = REPO / "examples" / "agents" / "calculator_mcp.py"
PAIRS = ((17, 25), (3, 4), (60, 9), (8, 80))
ROWS = [{"messages": [{"role": "user", "content": f"add {a} {b}"}], "answer": str(a + b)} for a, b in PAIRS]
# Passes only when the episode called `add`, got the answer from the calculator and gave it.
GRADER = {
    "type": "string_check",
    "name": "called_add",
    "input": "{{sample.output_tools.0.function.name}}={{sample.output_tools.0.output}};{{sample.output_text}}",
    "reference": "add={{item.answer}};{{item.answer}}",
    "operation": "eq",
}
FINAL = {"completed", "failed", "canceled"}


@pytest.fixture(scope="module")
def learner(grader_service, tmp_path_factory):
    """The operator offers the calculator to alice only, through the rollout's own setting."""
    workdir = tmp_path_factory.mktemp("evals-episodes")
    servers = [
        {
            "name": "calc",
            "kind": "mcp_stdio",
            "target": sys.executable,
            "args": [str(CALCULATOR)],
            "allowed_tenants": ["alice"],
        }
    ]
    tools = workdir / "tool-servers.json"
    tools.write_text(json.dumps({"servers": servers}))
    args = learner_args(workdir / "learner", None, grader_service)
    args += ["--api-keys-file", str(write_keys_file(workdir / "api-keys"))]
    args += ["--model-catalogue", f"tool={TOOL_MODEL}"]
    env = {
        "RFT_ROLLOUT_TOOL_SERVERS_FILE": str(tools),
        "RFT_ROLLOUT_MAX_MODEL_LEN": "512",
        "RFT_ROLLOUT_WARMUP_REQUESTS": "1",
        "RFT_ROLLOUT_MAX_EPISODE_TURNS": "4",
    }
    with ServiceProcess("rft-learner", args, env=env) as proc:
        yield proc


def client(learner, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=learner.base_url, api_key=KEYS[tenant], max_retries=0, timeout=600)


def _eval_and_file(api: openai.OpenAI, tmp_path: pathlib.Path):
    with open(write_jsonl(tmp_path / "valid.jsonl", ROWS), "rb") as handle:
        uploaded = api.files.create(file=handle, purpose="fine-tune")
    evaluation = api.evals.create(
        name="calculator",
        data_source_config={"type": "custom", "item_schema": {"type": "object"}, "include_sample_schema": True},
        testing_criteria=[GRADER],
    )
    return evaluation, uploaded


def _data_source(file_id: str, **sampling) -> dict:
    return {
        "type": "completions",
        "source": {"type": "file_id", "id": file_id},
        "model": "tool",
        "sampling_params": {"temperature": 0.0, "max_completion_tokens": 256, "seed": 3, **sampling},
    }


def test_a_tool_using_run_grades_episodes_and_shows_their_tool_messages(learner, tmp_path) -> None:
    alice = client(learner, "alice")
    evaluation, uploaded = _eval_and_file(alice, tmp_path)
    run = alice.evals.runs.create(
        evaluation.id, data_source=_data_source(uploaded.id, n=2, max_turns=3, tool_servers=["calc"])
    )
    assert run.data_source.sampling_params.max_turns == 3  # ours, kept with the run
    deadline = time.monotonic() + 600
    while run.status not in FINAL:
        assert time.monotonic() < deadline, f"run still {run.status}"
        time.sleep(1)
        run = alice.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    assert run.status == "completed", run.error
    metrics = run.metrics
    assert metrics["grader_errors"] == 0, metrics
    assert metrics["tool_calls_mean"] > 0 and metrics["episode_turns_mean"] >= 2, metrics
    assert metrics["tool_error_rate"] == 0.0
    assert metrics["episode_end.answer"] == 2 * len(ROWS)  # the sampled episodes
    assert run.result_counts.total == len(ROWS) and run.result_counts.passed > 0

    items = [i.model_dump() for i in alice.evals.runs.output_items.list(run.id, eval_id=evaluation.id)]
    assert len(items) == len(ROWS)
    scores = []
    for item in items:
        answer = item["datasource_item"]["answer"]
        output = item["sample"]["output"]
        roles = [m["role"] for m in output]
        assert roles[0] == "assistant" and "tool" in roles and roles[-1] == "assistant", output
        call = output[0]["tool_calls"][0]
        assert call["type"] == "function" and call["function"]["name"] == "add"
        tool = next(m for m in output if m["role"] == "tool")
        assert tool["tool_call_id"] == call["id"] and tool["content"] == answer  # the calculator's result
        assert output[-1]["content"] == item["greedy"]["output_text"]
        assert item["greedy"]["episode"]["end"] == "answer"
        assert [c["name"] for c in item["greedy"]["episode"]["tool_calls"]] == ["add"]
        assert all(s["episode"]["tool_calls"] for s in item["samples"])
        (result,) = item["results"]
        # The grader saw the tool call: a pass means the calculator's output and the answer agree.
        assert result["passed"] == (item["greedy"]["output_text"] == answer)
        assert item["status"] == ("pass" if result["passed"] else "fail")
        scores.append(result["score"])
    assert metrics["greedy_reward_mean"] == pytest.approx(sum(scores) / len(scores))


def test_tool_servers_the_tenant_may_not_use_are_refused_naming_the_offered(learner, tmp_path) -> None:
    alice, bob = client(learner, "alice"), client(learner, "bob")
    evaluation, uploaded = _eval_and_file(alice, tmp_path)
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.runs.create(
            evaluation.id, data_source=_data_source(uploaded.id, max_turns=2, tool_servers=["nope"])
        )
    assert refused.value.body["param"] == "data_source.sampling_params.tool_servers"
    assert "unknown tool server nope; offered: calc" in refused.value.body["message"]
    bob_eval, bob_file = _eval_and_file(bob, tmp_path)
    with pytest.raises(openai.BadRequestError) as refused:
        bob.evals.runs.create(bob_eval.id, data_source=_data_source(bob_file.id, max_turns=2, tool_servers=["calc"]))
    assert "unknown tool server calc; offered: none" in refused.value.body["message"]  # alice's only
    with pytest.raises(openai.BadRequestError) as refused:
        alice.evals.runs.create(evaluation.id, data_source=_data_source(uploaded.id, max_turns=-1))
    assert refused.value.body["param"] == "data_source.sampling_params.max_turns"
    with pytest.raises(openai.BadRequestError) as refused:  # one turn never runs its tool calls
        alice.evals.runs.create(
            evaluation.id, data_source=_data_source(uploaded.id, max_turns=1, tool_servers=["calc"])
        )
    assert refused.value.body["param"] == "data_source.sampling_params.max_turns"
    assert "whose tools would never run" in refused.value.body["message"]
    assert list(alice.evals.runs.list(evaluation.id)) == []  # nothing was queued
