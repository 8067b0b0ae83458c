"""Multi-turn, tool-using episodes end to end: a real rft-rollout (vLLM) serving
models/tool-base (scripts/build_tool_model.py: it calls `add` for "add 17 25" and a few
other prompts), a real rft.tools.v1 gRPC tool service process, a real MCP server started
by the rollout over stdio and another over streamable HTTP."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from rft.common.v1 import common_pb2
from rft.rollout.v1 import rollout_pb2
from rollout_helpers import stub
from service_process import ServiceProcess, free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOL_MODEL = REPO / "models" / "tool-base"
SERVERS = pathlib.Path(__file__).parent / "tool_servers"
TOKEN = "s3cret-tool-token"
TOOL_TURN = "\n<|im_start|>tool\n{}<|im_end|>\n<|im_start|>assistant\n"
CALL_17_25 = '<tool_call>{"name": "add", "arguments": {"a": 17, "b": 25}}</tool_call>'


def _start(args: list[str], ready: str, timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """A helper process and the first stdout line that starts with `ready`."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(ready):
            return proc, line.strip()
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{args} did not print {ready!r}")


def _wait_http(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/mcp", timeout=1)
        except urllib.error.HTTPError:
            return  # the server answers (a GET without a session is refused)
        except OSError:
            time.sleep(0.2)
            continue
        return
    raise RuntimeError("the MCP HTTP server did not start")


@pytest.fixture(scope="module")
def tool_rollout(tmp_path_factory):
    """rft-rollout on the tool model with five tool servers: the gRPC service in four
    modes (ok, error, slow, huge: its x-mode header), the MCP server over stdio (with
    ADD_OFFSET=1000 in its environment) and over HTTP."""
    grpc_proc, line = _start([str(SERVERS / "grpc_tools.py"), "--token", TOKEN], "PORT")
    grpc_address = f"127.0.0.1:{line.split()[1]}"
    http_port = free_port()
    mcp_http = subprocess.Popen([sys.executable, str(SERVERS / "mcp_tools.py"), "--http", str(http_port)])
    try:
        _wait_http(http_port)

        def adder(name: str, mode: str, **extra) -> dict:
            headers = {"authorization": f"Bearer {TOKEN}", "x-mode": mode}
            return {"name": name, "kind": "grpc", "target": grpc_address, "headers": headers, **extra}

        servers = [
            adder("adder", "ok"),
            adder("adder-error", "error"),
            adder("adder-slow", "slow", timeout_seconds=1),
            adder("adder-huge", "huge", max_output_bytes=256),
            adder("adder-pause", "pause"),
            adder("adder-alice", "ok", allowed_tenants=["alice"]),
            {
                "name": "mcp",
                "kind": "mcp_stdio",
                "target": sys.executable,
                "args": [str(SERVERS / "mcp_tools.py")],
                "env": {"ADD_OFFSET": "1000"},
                "reconnect_seconds": 1,
            },
            {"name": "mcp-http", "kind": "mcp_http", "target": f"http://127.0.0.1:{http_port}/mcp"},
        ]
        config = tmp_path_factory.mktemp("tools") / "tool-servers.json"
        config.write_text(json.dumps({"servers": servers}))
        args = ["--model", str(TOOL_MODEL), "--tool-servers-file", str(config), "--warmup-requests", "2"]
        args += ["--max-model-len", "512", "--max-episode-turns", "4", "--max-tool-calls-per-turn", "3"]
        args += ["--episode-timeout-seconds", "120"]
        with ServiceProcess("rft-rollout", args, ready_timeout=240) as proc:
            with proc.channel() as channel:
                yield proc, stub(channel)
    finally:
        grpc_proc.kill()
        mcp_http.kill()
        grpc_proc.wait()
        mcp_http.wait()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOOL_MODEL)


def chat(text: str) -> rollout_pb2.Prompt:
    return rollout_pb2.Prompt(chat=rollout_pb2.ChatPrompt(messages=[common_pb2.ChatMessage(role="user", content=text)]))


def episode(rollout_stub, servers, max_turns=3, max_tokens=256, prompt="add 17 25", tenant="", **sampling):
    request = rollout_pb2.GenerateRequest(
        prompts=[chat(prompt)],
        sampling=rollout_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, **sampling),
        episode=rollout_pb2.EpisodeParams(max_turns=max_turns, tool_servers=servers, tenant=tenant),
    )
    response = rollout_stub.Generate(request, timeout=120)
    return response.results[0], response.results[0].samples[0]


def runs(mask: list[int]) -> list[tuple[int, int]]:
    """(value, length) runs of a mask."""
    out: list[tuple[int, int]] = []
    for value in mask:
        if out and out[-1][0] == value:
            out[-1] = (value, out[-1][1] + 1)
        else:
            out.append((value, 1))
    return out


def test_episode_calls_the_grpc_tool_and_continues_from_the_exact_token_ids(tool_rollout, tokenizer) -> None:
    _, rollout_stub = tool_rollout
    result, sample = episode(rollout_stub, ["adder"])
    ep = sample.episode
    assert ep.end == rollout_pb2.EPISODE_END_ANSWER and ep.turns == 2
    assert sample.finish_reason == rollout_pb2.FINISH_REASON_STOP
    (call,) = ep.tool_calls
    assert (call.id, call.turn, call.name, call.output, call.is_error) == ("call_0", 0, "add", "42", False)
    assert json.loads(call.arguments_json) == {"a": 17, "b": 25} and call.latency_seconds > 0

    ids, mask, logprobs = list(sample.token_ids), list(ep.token_mask), list(sample.logprobs)
    assert len(ids) == len(mask) == len(logprobs)
    (_, first), (_, inserted), (_, second) = runs(mask)  # sampled, tool turn, sampled
    assert runs(mask) == [(1, first), (0, inserted), (1, second)]
    # Turn 1: the call and the end-of-turn token, as sampled.
    assert tokenizer.decode(ids[:first]) == CALL_17_25 + "<|im_end|>"
    # The tool turn: the chat template's tokens around the result, tokenised on their own.
    assert ids[first : first + inserted] == tokenizer.encode(TOOL_TURN.format("42"), add_special_tokens=False)
    assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 0)
    assert all(lp <= 0.0 for lp in logprobs) and any(lp < 0.0 for lp in logprobs)
    assert tokenizer.decode(ids[first + inserted :]).endswith("<|im_end|>")
    assert sample.text == ep.final_text == tokenizer.decode(ids[first + inserted :], skip_special_tokens=True)
    assert [(m.role, m.content, list(m.tool_call_ids)) for m in ep.messages] == [
        ("assistant", "", ["call_0"]),
        ("tool", "42", ["call_0"]),
        ("assistant", ep.final_text, []),
    ]

    # Token in, token out: a plain Generate from the prompt and the trajectory before
    # turn 2, as token ids, samples turn 2 exactly.
    prefix = list(result.prompt_token_ids) + ids[: first + inserted]
    plain = rollout_stub.Generate(
        rollout_pb2.GenerateRequest(
            prompts=[rollout_pb2.Prompt(token_ids=rollout_pb2.TokenIds(ids=prefix))],
            sampling=rollout_pb2.SamplingParams(max_tokens=64, temperature=0.0),
        ),
        timeout=60,
    )
    again = plain.results[0].samples[0]
    assert list(again.token_ids) == ids[first + inserted :]
    assert list(again.logprobs) == pytest.approx(logprobs[first + inserted :], abs=1e-4)


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("adder-error", "error: the adder is out of order"),
        ("adder-slow", "error: tool 'add' timed out after 1 s"),
        ("mcp-http", "42"),
        ("mcp", "1042"),  # the stdio server got ADD_OFFSET from the tool-servers file
    ],
)
def test_tool_outputs_and_errors_reach_the_model_as_tool_messages(tool_rollout, tokenizer, server, expected) -> None:
    _, rollout_stub = tool_rollout
    _, sample = episode(rollout_stub, [server], max_turns=2)
    ep = sample.episode
    call = ep.tool_calls[0]
    assert call.output == expected
    assert call.is_error == expected.startswith("error")
    assert ep.turns == 2  # the episode went on after the tool's answer, error or not
    (_, first), (_, inserted), *_ = runs(list(ep.token_mask))
    inserted_ids = list(sample.token_ids)[first : first + inserted]
    assert inserted_ids == tokenizer.encode(TOOL_TURN.format(expected), add_special_tokens=False)


def test_tool_output_is_cut_at_the_servers_cap(tool_rollout) -> None:
    _, rollout_stub = tool_rollout
    _, sample = episode(rollout_stub, ["adder-huge"], max_turns=2, max_tokens=480)
    call = sample.episode.tool_calls[0]
    assert not call.is_error and call.output.startswith("42xxx")
    assert call.output.endswith("\n[output truncated]") and len(call.output.encode()) <= 256


def test_unknown_tool_is_a_tool_error(tool_rollout) -> None:
    _, rollout_stub = tool_rollout
    _, sample = episode(rollout_stub, [], max_turns=2)
    call = sample.episode.tool_calls[0]
    assert call.is_error and call.output == "error: unknown tool 'add'; the tools are []"


def test_last_turn_calls_are_not_run_and_the_budget_ends_an_episode(tool_rollout, tokenizer) -> None:
    _, rollout_stub = tool_rollout
    _, sample = episode(rollout_stub, ["adder"], max_turns=1)
    assert sample.episode.end == rollout_pb2.EPISODE_END_MAX_TURNS and sample.episode.turns == 1
    assert not sample.episode.tool_calls and set(sample.episode.token_mask) == {1}
    assert sample.finish_reason == rollout_pb2.FINISH_REASON_LENGTH
    call_tokens = len(tokenizer.encode(CALL_17_25 + "<|im_end|>", add_special_tokens=False))
    # Room for the call but not for the tool turn after it.
    _, short = episode(rollout_stub, ["adder"], max_tokens=call_tokens + 5)
    assert short.episode.end == rollout_pb2.EPISODE_END_LENGTH and len(short.token_ids) == call_tokens
    assert len(short.episode.tool_calls) == 1  # the call ran; its result did not fit


def test_stream_generate_runs_episodes(tool_rollout) -> None:
    _, rollout_stub = tool_rollout
    request = rollout_pb2.StreamGenerateRequest(
        prompts=[chat("add 17 25"), chat("add 3 4")],
        sampling=rollout_pb2.SamplingParams(max_tokens=200, temperature=0.0, n=2),
        episode=rollout_pb2.EpisodeParams(max_turns=3, tool_servers=["adder"]),
    )
    samples = [r.sample for r in rollout_stub.StreamGenerate(request, timeout=120)]
    assert sorted((s.prompt_index, s.sample_index) for s in samples) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    outputs = {s.prompt_index: [c.output for c in s.episode.tool_calls] for s in samples}
    assert outputs == {0: ["42"], 1: ["7"]}


def test_requests_are_checked_and_credentials_stay_on_the_server(tool_rollout) -> None:
    proc, rollout_stub = tool_rollout
    for servers, turns, message in [(["nope"], 2, "episode.tool_servers"), (["adder"], 5, "max_episode_turns=4")]:
        with pytest.raises(grpc.RpcError) as caught:
            episode(rollout_stub, servers, max_turns=turns)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in caught.value.details()
    info = rollout_stub.GetModelInfo(rollout_pb2.GetModelInfoRequest())
    assert info.limits.max_episode_turns == 4
    assert info.limits.max_tool_calls_per_turn == 3 and info.limits.max_tool_calls_per_episode == 32
    assert info.limits.episode_timeout_seconds == 120
    kinds = {s.name: (s.kind, list(s.tools)) for s in info.tool_servers}
    assert kinds["adder"] == ("grpc", ["add"]) and kinds["mcp"] == ("mcp_stdio", ["add", "fail"])
    assert TOKEN not in str(info)
    _, sample = episode(rollout_stub, ["adder"])
    assert TOKEN not in str(sample)
    metrics = urllib.request.urlopen(proc.metrics_url, timeout=5).read().decode()
    for name in ("rft_rollout_episodes_total", "rft_rollout_tool_calls_total", "rft_rollout_tool_tokens_total"):
        assert name in metrics
    assert TOKEN not in metrics


def test_tool_servers_are_limited_to_their_allowed_tenants(tool_rollout) -> None:
    _, rollout_stub = tool_rollout
    # "adder-alice" allows tenant alice only; the others have no allowed_tenants: "default" only.
    for tenant, servers in [("", ["adder-alice"]), ("bob", ["adder-alice"]), ("alice", ["adder"])]:
        with pytest.raises(grpc.RpcError) as caught:
            episode(rollout_stub, servers, max_turns=2, tenant=tenant)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "episode.tool_servers" in caught.value.details()
    _, sample = episode(rollout_stub, ["adder-alice"], max_turns=2, tenant="alice")
    assert sample.episode.tool_calls[0].output == "42"

    def listed(tenant: str) -> set[str]:
        info = rollout_stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(tenant=tenant))
        return {server.name for server in info.tool_servers}

    assert "adder-alice" in listed("") and "adder" in listed("")  # the operator's view: every server
    assert listed("alice") == {"adder-alice"}
    assert listed("bob") == set()  # bob learns nothing of other tenants' servers
    assert "adder-alice" not in listed("default") and "adder" in listed("default")


def test_the_learner_trains_on_real_episodes_with_tool_tokens_masked(tool_rollout, grader) -> None:
    """Rollout (episodes over the gRPC tool) -> real grader (reads the tool calls) ->
    one GRPO update: only sampled tokens are trained on, and the trainer's own logprobs
    of them match the rollout's kept ones (the trajectory is the same token ids)."""
    import asyncio

    import torch
    from rft_learner.hparams import ReinforcementParams
    from rft_learner.remote import GraderClient, RolloutPool
    from rft_learner.trainer.data import DataCursor, Example
    from rft_learner.trainer.policy import load_model, load_tokenizer
    from rft_learner.trainer.rl_step import Collector, grade_rollouts
    from rft_learner.trainer.updates import rl_update

    proc, _ = tool_rollout
    params = ReinforcementParams(
        batch_size=2,
        group_size=4,
        temperature=1.0,
        max_new_tokens=200,
        kl_coef=0.0,
        max_turns=3,
        tool_servers=["adder"],
    )
    examples = [
        Example([{"role": "user", "content": f"add {a} {b}"}], {"answer": str(a + b), "args": {"a": a, "b": b}})
        for a, b in [(17, 25), (3, 4)]
    ]
    # 0.5 for calling add with the prompt's operands, 0.5 for the right final answer.
    spec = {
        "type": "multi",
        "name": "episode",
        "graders": {
            "called": {
                "type": "string_check",
                "name": "called",
                "input": "{{sample.output_tools.0.function.arguments}}",
                "reference": '"a": {{item.args.a}}, "b": {{item.args.b}}',
                "operation": "like",
            },
            "answer": {
                "type": "string_check",
                "name": "answer",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
                "operation": "eq",
            },
        },
        "calculate_output": "0.5 * called + 0.5 * answer",
    }

    async def run():
        pool = RolloutPool([proc.address])
        scorer = GraderClient(grader.address, "default", spec=spec)
        try:
            collector = Collector(pool, examples, DataCursor(2, seed=0), DataCursor(2, seed=1), params, seed=0)
            rollouts = await collector.collect(step=1)
            return rollouts, await grade_rollouts(scorer, examples, rollouts)
        finally:
            await pool.close()
            await scorer.close()

    rollouts, graded = asyncio.run(run())
    samples = [s for p in rollouts.prompts for s in p.samples]
    assert len(samples) == 8 and all(s.episode is not None for s in samples)
    assert graded.errors <= sum(not s.episode.tool_calls for s in samples)  # no calls: a template error
    assert any(r is not None and r >= 0.5 for g in graded.groups for r in g.rewards)
    groups = graded.groups
    assert all(g.masks is not None for g in groups)

    model = load_model(TOOL_MODEL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    # Every sample trains with a reward, so the step sees all their tokens.
    groups = [type(g)(g.prompt_token_ids, g.completions, g.logprobs, [1.0, 0.0] * 2, g.masks) for g in groups]
    metrics = rl_update(model, None, optimizer, groups, params, load_tokenizer(TOOL_MODEL).pad_token_id)
    assert metrics["train_samples"] == 8.0
    assert metrics["train_tokens"] == sum(sum(s.episode.token_mask) for s in samples)
    assert metrics["train_tokens"] < sum(len(s.token_ids) for s in samples)  # tool tokens left out
    assert metrics["mismatch_kl"] < 1e-3  # vLLM's logprobs of the sampled tokens are the trainer's
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_cancelled_call_aborts_its_episodes_mid_tool_call(tool_rollout) -> None:
    proc, rollout_stub = tool_rollout
    with pytest.raises(grpc.RpcError) as caught:
        request = rollout_pb2.GenerateRequest(
            prompts=[chat("add 17 25")],
            sampling=rollout_pb2.SamplingParams(max_tokens=200, temperature=0.0, n=2),
            episode=rollout_pb2.EpisodeParams(max_turns=3, tool_servers=["adder-pause"]),
        )
        rollout_stub.Generate(request, timeout=2)  # the tool takes 4 s
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def queue_depth() -> float:
        metrics = urllib.request.urlopen(proc.metrics_url, timeout=5).read().decode()
        return float(
            next(line.split()[-1] for line in metrics.splitlines() if line.startswith("rft_rollout_queue_depth"))
        )

    deadline = time.monotonic() + 10
    while queue_depth() != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert queue_depth() == 0
    _, sample = episode(rollout_stub, ["adder"])  # the service goes on serving episodes
    assert sample.episode.end == rollout_pb2.EPISODE_END_ANSWER


def test_a_dead_mcp_server_is_a_tool_error_not_a_failed_episode_and_comes_back(tool_rollout) -> None:
    """The stdio MCP server (a child of the rollout) is killed: the next call to it is a
    tool error, the episode still finishes, other servers keep working, the server shows
    as down on /metrics; after its reconnect_seconds (1 s here) a call starts it again
    (with its environment from the tool-servers file) and gets its answer."""
    import psutil

    proc, rollout_stub = tool_rollout

    def stdio_servers() -> list:
        children = psutil.Process(proc.proc.pid).children(recursive=True)
        return [c for c in children if any("mcp_tools.py" in part for part in c.cmdline())]

    def up() -> str:
        text = urllib.request.urlopen(proc.metrics_url, timeout=5).read().decode()
        return next(
            line.split()[-1]
            for line in text.splitlines()
            if line.startswith('rft_rollout_tool_server_up{server="mcp"}')
        )

    assert up() == "1.0"
    (server,) = stdio_servers()
    server.kill()
    server.wait(timeout=10)
    _, sample = episode(rollout_stub, ["mcp"], max_turns=2)
    (call,) = sample.episode.tool_calls
    assert call.is_error and call.output.startswith("error: tool 'add' unavailable (")
    assert sample.episode.turns == 2
    assert up() == "0.0"
    _, other = episode(rollout_stub, ["adder"])
    assert [c.output for c in other.episode.tool_calls] == ["42"]
    time.sleep(1.5)
    _, again = episode(rollout_stub, ["mcp"], max_turns=2)
    assert [(c.output, c.is_error) for c in again.episode.tool_calls] == [("1042", False)]
    (restarted,) = stdio_servers()
    assert restarted.pid != server.pid and up() == "1.0"


def test_a_weight_update_during_an_episode_ends_it_on_one_policy_version(tool_rollout) -> None:
    """The tool call of turn 0 takes 4 s; an update lands meanwhile: turn 1 would run on
    the new version, so the episode ends (ABORT) with turn 0's tokens, all of the old one."""
    import threading

    import safetensors.numpy
    from rft_common.weights import weight_update_requests

    _, rollout_stub = tool_rollout
    weights = safetensors.numpy.load_file(str(TOOL_MODEL / "model.safetensors"))
    weights.setdefault("lm_head.weight", weights["model.embed_tokens.weight"])  # tied: sent too
    old = rollout_stub.GetModelInfo(rollout_pb2.GetModelInfoRequest()).policy_version
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(sample=episode(rollout_stub, ["adder-pause"])[1]))
    thread.start()
    time.sleep(2)  # turn 0 is sampled and its call is running
    applied = rollout_stub.UpdateWeights(weight_update_requests(old + 1, weights.items()), timeout=120)
    assert applied.version == old + 1
    thread.join(timeout=60)
    sample = done["sample"]
    assert sample.episode.end == rollout_pb2.EPISODE_END_ABORT
    assert sample.finish_reason == rollout_pb2.FINISH_REASON_ABORT
    assert sample.policy_version == old and sample.episode.turns == 1
    assert [c.output for c in sample.episode.tool_calls] == ["42"]
    sampled = [i for i, m in zip(sample.token_ids, sample.episode.token_mask, strict=True) if m]
    assert len(sampled) == len(CALL_17_25) + 1  # turn 0 only: the call and <|im_end|>
    # The next episode runs wholly on the new version.
    _, after = episode(rollout_stub, ["adder"])
    assert after.policy_version == old + 1 and after.episode.end == rollout_pb2.EPISODE_END_ANSWER


def test_a_tool_using_job_runs_end_to_end_through_the_learner(tool_rollout, grader, tmp_path) -> None:
    """CreateJob with max_turns and tool_servers on a real learner: the job is checked
    against the rollout's tool servers, trains on episodes, evaluates with them and
    publishes the episode metrics. Last in this module: it pushes new weights."""
    sys.path.insert(0, str(REPO / "tests" / "learner"))
    from jobs_client import (
        jobs_stub,
        learner_args,
        metrics_by_step,
        reinforcement_request,
        upload,
        wait_for,
        write_jsonl,
    )
    from rft.learner.v1 import fine_tuning_pb2 as ft

    proc, _ = tool_rollout
    rows = [
        {"messages": [{"role": "user", "content": f"add {a} {b}"}], "answer": str(a + b)}
        for a, b in [(17, 25), (3, 4), (60, 9), (8, 80)]
    ]
    spec = {
        "type": "string_check",
        "name": "answer",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "eq",
    }
    hyper = dict(batch_size=2, group_size=4, max_new_tokens=200, n_epochs=1, kl_coef=0.0, eval_interval=0)
    hyper.update(eval_samples=2, temperature=1.0, max_turns=3)
    args = learner_args(tmp_path / "learner", proc, grader)
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        train = upload(channel, write_jsonl(tmp_path / "train.jsonl", rows))
        valid = upload(channel, write_jsonl(tmp_path / "valid.jsonl", rows[:2]))
        bad = reinforcement_request(str(TOOL_MODEL), train.id, valid.id, spec, tool_servers=["nope"], **hyper)
        with pytest.raises(grpc.RpcError) as caught:
            jobs_stub(channel).CreateJob(bad, timeout=120)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "hyperparameters.tool_servers" in caught.value.details()

        request = reinforcement_request(str(TOOL_MODEL), train.id, valid.id, spec, tool_servers=["adder"], **hyper)
        job_id = jobs_stub(channel).CreateJob(request, timeout=120).job.id
        job = wait_for(channel, job_id, {ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED}, timeout=600)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        steps = metrics_by_step(channel, job_id)
    trained = [values for values in steps.values() if "train_reward_mean" in values]
    assert len(trained) == 2
    for values in trained:
        assert values["tool_calls_mean"] > 0 and values["episode_turns_mean"] >= 1
        assert values["tool_tokens_mean"] > 0 and values["sampled_tokens_mean"] > 0
        assert values["train_tokens"] < values["response_length_mean"] * values["train_samples"]
    evaluated = [values for values in steps.values() if "valid_reward_mean" in values]
    assert evaluated and all(values["valid_tool_calls_mean"] > 0 for values in evaluated)
