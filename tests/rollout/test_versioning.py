"""Atomic versioning: while clients generate without pause, several updates land; every
sample reports a version that existed and its tokens are exactly what that version's
weights produce (a prefix of it when the update aborted the sample), never a mix."""

from __future__ import annotations

import threading
import time

from rft.rollout.v1 import rollout_pb2
from rft_common.weights import weight_update_requests
from rollout_helpers import current_version, greedy, token_prompt

PROBES = [[5, 6, 7], [40, 41, 42, 43], [70, 3, 71], [90, 91], [20, 21, 22, 23, 24, 25]]
MAX_TOKENS = 48
CYCLE = ["B", "C", "A", "B", "C", "A"]


def apply(rollout, version: int, weights) -> rollout_pb2.UpdateWeightsResponse:
    return rollout.stub.UpdateWeights(weight_update_requests(version, weights.items()), timeout=120)


def test_every_sample_comes_from_exactly_one_existing_version(rollout, models) -> None:
    sets = models.weight_sets
    # What each weight set produces, generated with nothing else running.
    version = current_version(rollout.stub)
    weights_of_version: dict[int, str] = {}
    expected: dict[str, list[list[int]]] = {}
    for name in ("A", "B", "C"):
        version += 1
        apply(rollout, version, sets[name])
        weights_of_version[version] = name
        expected[name] = [list(s.token_ids) for s in greedy(rollout.stub, PROBES, MAX_TOKENS)]
    for i in range(len(PROBES)):  # the sets are told apart on every probe
        assert len({tuple(expected[name][i][:8]) for name in expected}) == 3

    stop = threading.Event()
    collected: list[rollout_pb2.Sample] = []
    errors: list[BaseException] = []
    request = dict(
        prompts=[token_prompt(ids) for ids in PROBES],
        sampling=rollout_pb2.SamplingParams(n=2, temperature=0.0, max_tokens=MAX_TOKENS),
    )

    def unary_client() -> None:
        try:
            while not stop.is_set():
                response = rollout.stub.Generate(rollout_pb2.GenerateRequest(**request), timeout=120)
                collected.extend(s for r in response.results for s in r.samples)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    def stream_client() -> None:
        try:
            while not stop.is_set():
                for message in rollout.stub.StreamGenerate(rollout_pb2.StreamGenerateRequest(**request), timeout=120):
                    collected.append(message.sample)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    clients = [threading.Thread(target=target) for target in (unary_client, unary_client, stream_client)]
    for client in clients:
        client.start()
    responses = []
    try:
        time.sleep(0.5)
        for name in CYCLE:
            version += 1
            responses.append(apply(rollout, version, sets[name]))
            weights_of_version[version] = name
            time.sleep(0.3)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=120)
    assert not errors, errors

    assert [r.version for r in responses] == sorted(weights_of_version)[3:]
    seen_versions = {sample.policy_version for sample in collected}
    assert seen_versions <= set(weights_of_version)
    assert len(seen_versions) >= 3, seen_versions  # generation really overlapped the updates
    aborted = [s for s in collected if s.finish_reason == rollout_pb2.FINISH_REASON_ABORT]
    assert aborted and sum(r.aborted_requests for r in responses) > 0
    for sample in collected:
        produced = expected[weights_of_version[sample.policy_version]][sample.prompt_index]
        tokens = list(sample.token_ids)
        if sample.finish_reason == rollout_pb2.FINISH_REASON_ABORT:
            assert tokens == produced[: len(tokens)], (sample.policy_version, tokens, produced)
        else:
            assert sample.finish_reason == rollout_pb2.FINISH_REASON_LENGTH
            assert tokens == produced, (sample.policy_version, tokens, produced)
        assert len(sample.logprobs) == len(tokens)
