"""Wires the grader's core and servicer into the shared gRPC server.

Lifespan: the registry, the worker lanes, the model client and the python sandbox
are opened before the server reports SERVING and closed after it has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib

from rft.grader.v1 import grader_pb2_grpc
from rft_common.api_keys import ApiKeys
from rft_common.server import GrpcServer

from rft_grader.config import GraderConfig
from rft_grader.core import GraderCore
from rft_grader.graders import Runtime
from rft_grader.graders.python import open_sandbox, sandbox_unavailable_reason
from rft_grader.lanes import CpuLanes
from rft_grader.model_client import ModelClient
from rft_grader.registry import Registry
from rft_grader.servicer import SERVICE_NAME, GraderServicer
from rft_grader.wordnet import prepare_wordnet

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_core(config: GraderConfig):
    """Everything the core runs on, for the duration of the `async with`."""
    try:
        nltk_data = await asyncio.to_thread(prepare_wordnet, config.data_dir)
    except RuntimeError as exc:  # only METEOR needs it: serve everything else
        log.warning("text_similarity meteor will fail: %s", exc)
        nltk_data = ""
    async with contextlib.AsyncExitStack() as stack:
        registry = await stack.enter_async_context(Registry(pathlib.Path(config.data_dir) / "graders.sqlite3"))
        lanes = await stack.enter_async_context(
            CpuLanes(config.cpu_workers, config.cpu_worker_memory_bytes, nltk_data, config.cpu_sample_timeout_seconds)
        )
        models = await stack.enter_async_context(
            ModelClient(
                config.model_base_url,
                config.resolved_model_api_key(),
                config.model_timeout_seconds,
                config.model_max_concurrency,
                config.allow_spec_base_url,
                config.model_max_reply_bytes,
            )
        )
        sandbox = await stack.enter_async_context(open_sandbox(config))
        if reason := sandbox_unavailable_reason(sandbox):
            log.warning("python graders are disabled: %s", reason)
        else:
            log.info("python sandbox ready", extra={"sandbox": sandbox.describe()})
        if reason := models.disabled_reason:
            log.info("score_model and label_model graders are disabled: %s", reason)
        yield GraderCore(registry, Runtime(lanes, models, sandbox, config.limits()))


async def serve(config: GraderConfig) -> None:
    keys = ApiKeys.load(config.api_keys_file)
    async with GrpcServer(config, "grader", keys) as server, open_core(config) as core:
        server.add_service(grader_pb2_grpc.add_GraderServiceServicer_to_server, GraderServicer(core), SERVICE_NAME)
        await server.start()
        await server.set_serving(True)
        await server.wait_for_termination()
