"""Wires the vLLM engine, the core and the servicer into the shared gRPC server.

The gRPC server starts first so that health checks answer (NOT_SERVING) during the
engine's start-up; health turns SERVING once the engine is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib

from rft.rollout.v1 import rollout_pb2_grpc
from rft_common.server import GrpcServer

from rft_rollout import metrics
from rft_rollout.config import RolloutConfig
from rft_rollout.core import RolloutCore, Settings, default_staging_dir
from rft_rollout.domain import Limits
from rft_rollout.engine import open_vllm_engine
from rft_rollout.model_spec import describe_model
from rft_rollout.servicer import SERVICE_NAME, RolloutServicer
from rft_rollout.tool_servers import load_tool_servers, open_tool_box

log = logging.getLogger(__name__)

# How often an idle service checks that its engine is alive (health turns NOT_SERVING
# when it is not, so an orchestrator restarts the replica).
ENGINE_WATCH_SECONDS = 2.0


def settings_from(config: RolloutConfig) -> Settings:
    return Settings(
        model=config.model,
        limits=Limits(
            config.max_prompts,
            config.max_n,
            config.max_tokens,
            config.max_prompt_tokens,
            config.max_episode_turns,
            config.max_tool_calls_per_turn,
            config.max_tool_calls_per_episode,
            config.episode_timeout_seconds,
        ),
        default_max_tokens=config.default_max_tokens,
        weights_dir=config.weights_dir,
        staging_dir=pathlib.Path(config.staging_dir) if config.staging_dir else default_staging_dir(),
        max_lora_rank=config.max_lora_rank,
    )


async def serve(config: RolloutConfig) -> None:
    servicer = RolloutServicer()
    async with GrpcServer(config, "rollout") as server:
        server.add_service(rollout_pb2_grpc.add_RolloutServiceServicer_to_server, servicer, SERVICE_NAME)
        await server.start()
        starting = asyncio.create_task(_run_engine(config, servicer, server))
        stopping = asyncio.create_task(server.wait_for_termination())
        done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()  # the engine exited on its own: raise why
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)


async def _run_engine(config: RolloutConfig, servicer: RolloutServicer, server: GrpcServer) -> None:
    """Start the tool servers and the engine, serve until cancelled, then shut both down."""
    tool_servers = load_tool_servers(config.tool_servers_file) if config.tool_servers_file else []
    async with open_tool_box(tool_servers) as tools, open_vllm_engine(config) as engine:
        model = await asyncio.to_thread(describe_model, config.model, engine.facts.dtype)

        async def stop_serving(reason: str) -> None:
            await server.set_serving(False, reason)

        core = RolloutCore(engine, model, settings_from(config), on_broken=stop_serving, tools=tools)
        metrics.QUEUE_DEPTH.set_function(engine.num_unfinished_requests)
        try:
            seconds = await engine.warm_up(config.warmup_requests)
            log.info("engine ready", extra={"model": config.model, "warmup_seconds": round(seconds, 2)})
            servicer.core = core
            await server.set_serving(True)
            while not engine.dead:  # until cancelled by shutdown
                await asyncio.sleep(ENGINE_WATCH_SECONDS)
            await core.stop_serving("the inference engine died; see the log above")
            await asyncio.Event().wait()
        finally:
            servicer.core = None
            metrics.QUEUE_DEPTH.set_function(lambda: 0)
            core.close()
