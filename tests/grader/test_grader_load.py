"""500 concurrent Grade RPCs against the live grader: every one answers, with the right
scores; latency percentiles are printed (pytest -s) for docs/security.md."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from graderlib import grade_request, string_check
from load import fire
from rft.grader.v1 import grader_pb2_grpc

PYTHON = {
    "type": "python",
    "name": "contains",
    "source": "def grade(sample, item):\n    return float(item['answer'] in sample['output_text'])\n",
}


def run_load(address: str, spec: dict, calls: int, items: int):
    async def main():
        async with grpc.aio.insecure_channel(address) as channel:
            stub = grader_pb2_grpc.GraderServiceStub(channel)

            async def one(index: int) -> None:
                answer = str(index % 10)
                pairs = [(f"say {answer}" if i % 2 else "nothing", {"answer": answer}) for i in range(items)]
                response = await stub.Grade(grade_request(spec, pairs, tenant=f"load{index % 3}"), timeout=300)
                expected = [1.0 if i % 2 else 0.0 for i in range(items)]
                got = [r.score if not r.HasField("error") else r.error.message for r in response.results]
                assert got == expected, got

            return await fire(calls, one)

    return asyncio.run(main())


def test_500_concurrent_string_check_grades(grader_service) -> None:
    report = run_load(grader_service.address, string_check("like"), calls=500, items=8)
    print(report.summary("grader string_check x8 items"))
    assert report.errors == []


@pytest.mark.python_grader
def test_concurrent_python_grades_across_tenants(grader_service) -> None:
    report = run_load(grader_service.address, PYTHON, calls=120, items=4)
    print(report.summary("grader python x4 items, 3 tenants"))
    assert report.errors == []
