"""The learner's side of multi-turn episodes, checked by hand: tool-result tokens are in
the sequence but out of every loss; importance ratios use the rollout's kept logprobs of
the sampled tokens; GAE skips the tool results instead of ending the episode there."""

from __future__ import annotations

import math

import pytest
import torch
from rft_learner.rl.advantages import gae, terminal_rewards
from rft_learner.rl.losses import PolicyLossConfig, policy_loss
from rft_learner.trainer.policy import build_sequence_batch


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


def test_sequence_batch_takes_the_episode_mask_and_kept_logprobs() -> None:
    # prompt [10, 11]; trajectory: sampled 5, 6; tool tokens 7, 8; sampled 9
    batch = build_sequence_batch(
        [[10, 11], [10]],
        [[5, 6, 7, 8, 9], [4]],
        [[-0.5, -1.0, 0.0, 0.0, -2.0], [-3.0]],
        pad_id=0,
        completion_masks=[[1, 1, 0, 0, 1], None],
    )
    assert batch.input_ids.tolist() == [[10, 11, 5, 6, 7, 8, 9], [10, 4, 0, 0, 0, 0, 0]]
    # position t predicts token t+1: the prompt's last position predicts the first completion token
    close(batch.action_mask, [[0, 1, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0]])
    close(batch.old_logprobs, [[0, -0.5, -1.0, 0, 0, -2.0], [-3.0, 0, 0, 0, 0, 0]])
    assert batch.attention_mask.tolist() == [[1] * 7, [1, 1, 0, 0, 0, 0, 0]]  # tool tokens are read
    with pytest.raises(ValueError, match="mask of 2"):
        build_sequence_batch([[1]], [[2, 3, 4]], None, 0, [[1, 1]])


def test_ppo_loss_ignores_tool_tokens_and_uses_the_kept_logprobs() -> None:
    old = torch.tensor([[-1.0, -2.0, 0.0, 0.0, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0]])
    # ratios on the sampled tokens: 1.1, 1.5, 0.5; the tool positions get absurd values
    new = old + torch.tensor([[math.log(1.1), math.log(1.5), 50.0, float("nan"), math.log(0.5)]])
    new.requires_grad_(True)
    loss, metrics = policy_loss(new, old, torch.tensor([1.0]), mask, PolicyLossConfig(clip_range=0.2))
    # A = 1: min(r, clip(r, 0.8, 1.2)) = 1.1, 1.2, 0.5 -> loss = -(1.1 + 1.2 + 0.5) / 3
    assert loss.item() == pytest.approx(-(1.1 + 1.2 + 0.5) / 3, abs=1e-6)
    assert metrics["clip_fraction"] == pytest.approx(1 / 3)  # only the 1.5 is clipped
    assert metrics["ratio_max"] == pytest.approx(1.5, abs=1e-5)
    loss.backward()
    # gradient -A * r / N where the clip is inactive, 0 where active and on tool tokens
    close(new.grad, [[-1.1 / 3, 0.0, 0.0, 0.0, -0.5 / 3]], atol=1e-6)


def test_gae_skips_tool_tokens_instead_of_ending_the_episode() -> None:
    mask = torch.tensor([[1, 0, 0, 1]])
    rewards = terminal_rewards(torch.tensor([1.0]), mask)
    close(rewards, [[0.0, 0.0, 0.0, 1.0]], atol=0)  # the score lands on the last sampled token
    values = torch.tensor([[0.5, 9.0, float("nan"), 0.25]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # t=3: delta = 1 + 0 - 0.25 = 0.75                         A_3 = 0.75
    # t=0: next valid is t=3: delta = 0 + 0.25 - 0.5 = -0.25   A_0 = -0.25 + 0.75 = 0.5
    close(adv, [[0.5, 0.0, 0.0, 0.75]])
    close(ret, [[1.0, 0.0, 0.0, 1.0]])  # both sampled tokens see the episode's reward
    adv, _ = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    # t=0: delta = 0 + 0.5*0.25 - 0.5 = -0.375                 A_0 = -0.375 + 0.25*0.75 = -0.1875
    close(adv, [[-0.1875, 0.0, 0.0, 0.75]])


def test_episode_metrics_by_hand() -> None:
    from rft.rollout.v1 import rollout_pb2
    from rft_learner.trainer.rl_step import episode_metrics

    def call(is_error: bool, seconds: float) -> rollout_pb2.ToolCall:
        return rollout_pb2.ToolCall(is_error=is_error, latency_seconds=seconds)

    episodes = [
        rollout_pb2.Episode(token_mask=[1, 1, 0, 0, 0, 1], turns=2, tool_calls=[call(False, 0.5), call(True, 1.5)]),
        rollout_pb2.Episode(token_mask=[1, 1, 1, 1], turns=1),
        rollout_pb2.Episode(token_mask=[1, 0, 1], turns=3, tool_calls=[call(True, 0.0)]),  # unparsable: not sent
    ]
    assert episode_metrics(episodes) == {
        "episode_turns_mean": 2.0,  # (2 + 1 + 3) / 3
        "tool_calls_mean": 1.0,  # 3 calls / 3 episodes
        "tool_error_rate": pytest.approx(2 / 3),
        "tool_seconds_mean": 1.0,  # (0.5 + 1.5) / 2 sent calls
        "sampled_tokens_mean": 3.0,  # (3 + 4 + 2) / 3
        "tool_tokens_mean": pytest.approx(4 / 3),  # (3 + 0 + 1) / 3
    }
    assert episode_metrics([]) == {}


def test_job_hyperparameters_carry_the_episode_settings() -> None:
    from rft.learner.v1 import fine_tuning_pb2 as ft
    from rft_learner.hparams import reinforcement_params
    from rft_learner.trainer.rl_step import episode_params

    method = ft.ReinforcementMethod(hyperparameters=ft.ReinforcementHyperparameters(max_turns=4, tool_servers=["a"]))
    params = reinforcement_params(method)
    assert (params.max_turns, params.tool_servers) == (4, ["a"])
    episode = episode_params(params)
    assert (episode.max_turns, list(episode.tool_servers)) == (4, ["a"])
    assert episode_params(params, "alice").tenant == "alice"
    assert episode_params(reinforcement_params(ft.ReinforcementMethod())) is None  # single-turn by default


def test_create_job_refuses_tool_servers_the_tenant_may_not_use() -> None:
    from rft.learner.v1 import fine_tuning_pb2 as ft
    from rft.rollout.v1 import rollout_pb2
    from rft_learner.hparams import reinforcement_params
    from rft_learner.job_validation import InvalidJob, check_episode_support
    from rft_learner.trainer.rl_step import job_tenant

    method = ft.ReinforcementMethod(hyperparameters=ft.ReinforcementHyperparameters(max_turns=2, tool_servers=["db"]))
    params = reinforcement_params(method)
    limits = rollout_pb2.RequestLimits(max_episode_turns=4)
    # GetModelInfo asked for tenant alice lists only the servers alice may use.
    info = rollout_pb2.GetModelInfoResponse(limits=limits, tool_servers=[rollout_pb2.ToolServer(name="calc")])
    with pytest.raises(InvalidJob, match=r"hyperparameters\.tool_servers: .*tenant 'alice' no tool server \['db'\]"):
        check_episode_support(params, "r:1", info, "alice")
    info.tool_servers.add(name="db")
    check_episode_support(params, "r:1", info, "alice")
    request = ft.CreateJobRequest(method=ft.Method(reinforcement=method))
    assert job_tenant(request) == "default"
    request.method.reinforcement.grader.tenant = "alice"
    assert job_tenant(request) == "alice"


def test_create_job_refuses_tool_servers_with_one_turn() -> None:
    """One turn never runs its tool calls: a job naming tool servers needs max_turns >= 2."""
    from rft.learner.v1 import fine_tuning_pb2 as ft
    from rft_learner.job_validation import InvalidJob, method_params

    def request(**hyper) -> ft.CreateJobRequest:
        method = ft.ReinforcementMethod(hyperparameters=ft.ReinforcementHyperparameters(**hyper))
        return ft.CreateJobRequest(method=ft.Method(reinforcement=method))

    with pytest.raises(
        InvalidJob, match=r"hyperparameters\.max_turns: 1 with tool_servers, whose tools would never run"
    ):
        method_params(request(tool_servers=["calc"]))
    assert method_params(request(tool_servers=["calc"], max_turns=2)).tool_servers == ["calc"]
    assert method_params(request()).max_turns == 1  # no tools: one turn is fine
