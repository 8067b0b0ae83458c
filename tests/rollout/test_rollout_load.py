"""128 concurrent StreamGenerate calls against the live rollout (vLLM): every stream
delivers all its samples; latency percentiles are printed (pytest -s) for docs/security.md."""

from __future__ import annotations

import asyncio

import grpc
from load import fire
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rollout_helpers import token_prompt


def test_128_concurrent_stream_generates(rollout) -> None:
    async def main():
        async with grpc.aio.insecure_channel(rollout.proc.address) as channel:
            stub = rollout_pb2_grpc.RolloutServiceStub(channel)

            async def one(index: int) -> None:
                request = rollout_pb2.StreamGenerateRequest(
                    prompts=[token_prompt([5 + index % 50, 6, 7]), token_prompt([9, 10 + index % 40])],
                    sampling=rollout_pb2.SamplingParams(n=2, max_tokens=16, temperature=1.0, seed=index),
                )
                samples = [update.sample async for update in stub.StreamGenerate(request, timeout=600)]
                assert sorted((s.prompt_index, s.sample_index) for s in samples) == [(0, 0), (0, 1), (1, 0), (1, 1)]
                assert all(1 <= len(s.token_ids) <= 16 and len(s.logprobs) == len(s.token_ids) for s in samples)

            return await fire(128, one)

    report = asyncio.run(main())
    print(report.summary("rollout StreamGenerate 2 prompts x 2 samples x 16 tokens"))
    assert report.errors == []
