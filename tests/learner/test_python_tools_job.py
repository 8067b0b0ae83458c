"""A job's Python tools (issue #17 c): the `python_tools` hyperparameter goes to the rollout
in EpisodeParams, and CreateJob checks it with a real grader (it must describe to at least
one tool; a syntax error names its line) and against the rollout's tool servers (one of
kind grader_python for the tenant)."""

from __future__ import annotations

import asyncio
import pathlib

import pytest
from rft.learner.v1 import fine_tuning_pb2 as ft
from rft.rollout.v1 import rollout_pb2
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
