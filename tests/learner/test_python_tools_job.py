"""A job's Python tools (issue #17 c): the `python_tools` hyperparameter goes to the rollout
in EpisodeParams, and CreateJob checks it with a real grader (it must describe to at least
one tool; a syntax error names its line) and against the rollout's tool servers (one of
kind grader_python for the tenant, no Python tool named like a tool of the job's
tool_servers), and refuses max_turns 1 (its tools would never run)."""

from __future__ import annotations

import asyncio
import pathlib

import pytest
from rft.learner.v1 import fine_tuning_pb2 as ft
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from service_process import ServiceProcess

TOKEN = "op-token-learner-python-tools"
SOURCE = 'def lookup_price(sku: str) -> str:\n    """Price of a product in EUR."""\n    return "12.50"\n'


@pytest.fixture(scope="module")
def grader(tmp_path_factory):
    args = ["--data-dir", str(tmp_path_factory.mktemp("grader")), "--auth-token", TOKEN]
    with ServiceProcess("rft-grader", args) as proc:
        yield proc


def settings(grader: ServiceProcess, tmp_path: pathlib.Path, token: str = TOKEN):
    from rft_learner.trainer.loop import TrainerSettings

    return TrainerSettings(tmp_path, "127.0.0.1:9", grader.address, 10, grader_token=token)


def params(**hyper):
    from rft_learner.hparams import reinforcement_params

    return reinforcement_params(ft.ReinforcementMethod(hyperparameters=ft.ReinforcementHyperparameters(**hyper)))


def test_python_tools_travel_in_the_episode_params() -> None:
    from rft_learner.trainer.rl_step import episode_params

    episode = episode_params(params(max_turns=3, python_tools=SOURCE), "alice")
    assert (episode.python_tools_source, episode.tenant, episode.max_turns) == (SOURCE, "alice", 3)
    assert episode_params(params(python_tools=SOURCE)) is not None  # Python tools alone make episodes
    with pytest.raises(Exception, match="python_tools"):
        params(python_tools="x" * 65537)


def test_create_job_checks_the_source_with_the_grader(grader, tmp_path) -> None:
    from rft_learner.job_validation import InvalidJob, check_python_tools

    async def check(source: str, token: str = TOKEN) -> list[str]:
        return await check_python_tools(settings(grader, tmp_path, token), "alice", source)

    assert asyncio.run(check(SOURCE)) == ["lookup_price"]
    broken = SOURCE + "\ndef total(skus: list) -> float\n    return 0.0\n"
    with pytest.raises(InvalidJob, match=r"hyperparameters\.python_tools: .*SyntaxError.*line 5"):
        asyncio.run(check(broken))
    with pytest.raises(InvalidJob, match=r"python_tools: .*ZeroDivisionError.*line 1"):
        asyncio.run(check("RATE = 1 / 0\n"))
    with pytest.raises(InvalidJob, match=r"python_tools: defines no tool"):
        asyncio.run(check("import json\n\ndef _private():\n    pass\n"))
    with pytest.raises(InvalidJob, match=r"python_tools: the grader .* could not describe it"):
        asyncio.run(check(SOURCE, token="wrong-token"))


def test_create_job_needs_a_grader_python_server_for_the_tenant() -> None:
    from rft_learner.job_validation import InvalidJob, check_episode_support

    job = params(max_turns=2, python_tools=SOURCE)
    info = rollout_pb2.GetModelInfoResponse(
        limits=rollout_pb2.RequestLimits(max_episode_turns=4),
        tool_servers=[rollout_pb2.ToolServer(name="calc", kind="grpc")],
    )
    with pytest.raises(InvalidJob, match=r"python_tools: rollout r:1 offers tenant 'alice' no tool server of kind"):
        check_episode_support(job, "r:1", info, "alice")
    info.tool_servers.add(name="python", kind="grader_python")
    check_episode_support(job, "r:1", info, "alice")


def test_the_http_api_takes_python_tools_as_a_hyperparameter() -> None:
    from rft_learner.http_api.convert import fill_hyperparameters, hyperparameters_json
    from rft_learner.http_api.errors import ApiError

    message = ft.ReinforcementHyperparameters()
    fill_hyperparameters(message, {"max_turns": 2, "python_tools": SOURCE}, "method.reinforcement.hyperparameters")
    assert message.python_tools == SOURCE and hyperparameters_json(message)["python_tools"] == SOURCE
    with pytest.raises(ApiError, match="python_tools: expected a string"):
        fill_hyperparameters(
            ft.ReinforcementHyperparameters(), {"python_tools": 3}, "method.reinforcement.hyperparameters"
        )


def _request(model: str = "m", training_file: str = "f", **hyper) -> ft.CreateJobRequest:
    from google.protobuf import struct_pb2

    spec = struct_pb2.Struct()
    spec.update(
        {
            "type": "string_check",
            "name": "price",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "operation": "eq",
        }
    )
    return ft.CreateJobRequest(
        model=model,
        training_file=training_file,
        method=ft.Method(
            reinforcement=ft.ReinforcementMethod(
                grader=ft.GraderConfig(spec=spec, tenant="alice"),
                hyperparameters=ft.ReinforcementHyperparameters(**hyper),
            )
        ),
    )


def test_create_job_refuses_python_tools_with_one_turn_naming_max_turns() -> None:
    """An episode runs the tool calls of every turn but its last: with max_turns 1 (the
    default) the Python tools would never run. As `rft evals run --python-tools` refuses it."""
    from rft_learner.job_validation import InvalidJob, method_params

    one_turn = r"^method\.reinforcement\.hyperparameters\.max_turns: 1 with python_tools, .*set max_turns 2 or more"
    with pytest.raises(InvalidJob, match=one_turn):
        method_params(_request(python_tools=SOURCE))
    with pytest.raises(InvalidJob, match=one_turn):
        method_params(_request(python_tools=SOURCE, max_turns=1, tool_servers=["python"]))
    assert method_params(_request(python_tools=SOURCE, max_turns=2)).max_turns == 2
    assert method_params(_request(max_turns=1)).python_tools == ""  # single-turn jobs without tools stand


def test_create_job_refuses_python_tools_named_like_a_tool_of_its_tool_servers() -> None:
    from rft_learner.job_validation import InvalidJob, check_episode_support

    info = rollout_pb2.GetModelInfoResponse(
        limits=rollout_pb2.RequestLimits(max_episode_turns=4),
        tool_servers=[
            rollout_pb2.ToolServer(name="shop", kind="grpc", tools=["lookup_price", "add_to_cart"]),
            rollout_pb2.ToolServer(name="other", kind="grpc", tools=["total"]),
            rollout_pb2.ToolServer(name="python", kind="grader_python"),
        ],
    )
    job = params(max_turns=2, tool_servers=["shop"], python_tools=SOURCE)
    with pytest.raises(InvalidJob, match=r"python_tools: 'lookup_price' \(tool server 'shop'\): .*rename"):
        check_episode_support(job, "r:1", info, "alice", ["lookup_price", "total"])
    # A server the job does not name is no clash ("total"), nor are tools of other names.
    check_episode_support(job, "r:1", info, "alice", ["total", "lookup_stock"])


class _StandInRollout(rollout_pb2_grpc.RolloutServiceServicer):
    """A rollout's GetModelInfo (the boundary CreateJob asks), listing for the tenant a
    gRPC tool server `shop` with a tool `lookup_price` and a grader_python server."""

    def __init__(self) -> None:
        super().__init__()
        self.tenants: list[str] = []

    async def GetModelInfo(self, request, context):  # noqa: N802 - the RPC's name
        self.tenants.append(request.tenant)
        return rollout_pb2.GetModelInfoResponse(
            dtype="float32",
            limits=rollout_pb2.RequestLimits(max_episode_turns=4),
            tool_servers=[
                rollout_pb2.ToolServer(name="shop", kind="grpc", tools=["lookup_price"]),
                rollout_pb2.ToolServer(name="python", kind="grader_python"),
            ],
        )


def test_create_job_names_the_clashing_tool_before_the_job_is_queued(grader, tmp_path) -> None:
    """The whole CreateJob check with the real grader describing the source: a Python tool
    named like a tool of the job's tool server is refused (every Generate would fail)."""
    import dataclasses

    import grpc
    from rft.learner.v1 import files_pb2
    from rft_learner.db import Database
    from rft_learner.files import FileStore
    from rft_learner.job_validation import InvalidJob, JobValidator

    model = pathlib.Path(__file__).resolve().parents[2] / "models" / "tool-base"
    files = FileStore(Database(tmp_path / "learner.db"), tmp_path / "files", 1 << 20, 1 << 16)
    upload = files.begin_upload()
    upload.write(b'{"messages": [{"role": "user", "content": "price of A-1?"}], "answer": "12.50"}\n' * 3)
    training = files.commit(upload, "train.jsonl", files_pb2.FILE_PURPOSE_FINE_TUNE, "alice")
    renamed = SOURCE.replace("def lookup_price", "def price_in_eur")

    async def check(source: str) -> list[str]:
        rollout = _StandInRollout()
        server = grpc.aio.server()
        rollout_pb2_grpc.add_RolloutServiceServicer_to_server(rollout, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            config = dataclasses.replace(settings(grader, tmp_path), rollout_addresses=f"127.0.0.1:{port}")
            request = _request(str(model), training.id, max_turns=2, tool_servers=["shop"], python_tools=source)
            await JobValidator(files, config).validate(request, "alice")
        finally:
            await server.stop(None)
        return rollout.tenants

    with pytest.raises(InvalidJob, match=r"python_tools: 'lookup_price' \(tool server 'shop'\): a Python tool has"):
        asyncio.run(check(SOURCE))
    assert asyncio.run(check(renamed)) == ["alice"]  # the same job with the tool renamed passes
