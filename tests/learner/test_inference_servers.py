"""The chat-completions server pool's rules, on real processes standing in for vLLM:
the least recently used idle server is stopped to make room, a pool whose servers are
all busy answers 503, and without vLLM installed a call answers 503 saying so."""

from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import subprocess
import time

import pytest
from rft_learner.http_api import inference
from rft_learner.http_api.errors import ApiError
from rft_learner.http_api.inference import InferenceServers, InferenceSettings, _Server


def stand_in(name: str, last_used: float, in_use: int = 0) -> _Server:
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    ready = asyncio.get_running_loop().create_future()
    ready.set_result(None)
    return _Server(name, pathlib.Path("/m"), 0, process, pathlib.Path("/dev/null"), ready, "k", in_use, last_used)


def test_the_least_recently_used_idle_server_makes_room() -> None:
    async def run() -> None:
        pool = InferenceServers(InferenceSettings(max_models=2))
        old, recent = stand_in("old", time.monotonic() - 60), stand_in("recent", time.monotonic())
        pool._servers = {"old": old, "recent": recent}
        await pool._make_room()
        assert list(pool._servers) == ["recent"]
        assert old.process.poll() is not None and recent.process.poll() is None  # stopped, kept
        await pool.close()
        assert recent.process.poll() is not None

    asyncio.run(run())


def test_a_pool_of_busy_servers_answers_503() -> None:
    async def run() -> None:
        pool = InferenceServers(InferenceSettings(max_models=1))
        busy = stand_in("busy", time.monotonic() - 60, in_use=1)
        pool._servers = {"busy": busy}
        with pytest.raises(ApiError) as refused:
            await pool._make_room()
        assert refused.value.status == 503 and refused.value.code == "inference_busy"
        assert busy.process.poll() is None  # a request is streaming from it: it stays
        await pool.close()

    asyncio.run(run())


def test_without_vllm_a_chat_completion_answers_503_saying_so(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(inference.importlib.util, "find_spec", lambda name: None if name == "vllm" else real(name))

    async def run() -> None:
        pool = InferenceServers(InferenceSettings())
        with pytest.raises(ApiError) as refused:
            await pool._start("m", pathlib.Path("/m"))
        assert refused.value.status == 503 and "rft-learner[inference]" in refused.value.message
        await pool.close()

    asyncio.run(run())
