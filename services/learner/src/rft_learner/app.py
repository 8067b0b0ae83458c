"""Wires the learner's stores, job manager and servicers into the shared gRPC server."""

from __future__ import annotations

import contextlib
import logging
import pathlib

from rft.learner.v1 import files_pb2_grpc, fine_tuning_pb2_grpc
from rft_common.api_keys import ApiKeys
from rft_common.server import GrpcServer

from rft_learner.config import LearnerConfig
from rft_learner.db import Database
from rft_learner.files import FileStore
from rft_learner.files_servicer import SERVICE_NAME as FILES_SERVICE
from rft_learner.files_servicer import FilesServicer
from rft_learner.http_api.models import ModelCatalogue, ModelNames
from rft_learner.job_store import JobStore
from rft_learner.jobs import JobManager, LearnerSettings
from rft_learner.jobs_servicer import SERVICE_NAME as JOBS_SERVICE
from rft_learner.jobs_servicer import FineTuningServicer
from rft_learner.trainer.devices import resolve_placement
from rft_learner.trainer.loop import TrainerSettings
from rft_learner.weight_sync import WeightSyncSettings

log = logging.getLogger(__name__)


def _read(path: str) -> str:
    return pathlib.Path(path).read_text().strip() if path else ""


def trainer_settings(config: LearnerConfig) -> TrainerSettings:
    return TrainerSettings(
        data_dir=pathlib.Path(config.data_dir),
        rollout_addresses=config.rollout_addresses,
        grader_address=config.grader_address,
        checkpoint_interval=config.checkpoint_interval,
        rollout_token=_read(config.rollout_token_file),
        grader_token=_read(config.grader_token_file),
        tls_ca_file=config.tls_ca_file,
        remote_patience_seconds=config.remote_patience_seconds,
        trainer_ranks=config.trainer_ranks,
        placement=resolve_placement(config.device, config.precision),
        micro_batch_tokens=config.micro_batch_tokens,
        trainer_sharding=config.trainer_sharding,
        weight_sync=WeightSyncSettings(
            mode=config.weight_sync,
            backend=config.weight_sync_backend,
            host=config.weight_sync_host,
            port=config.weight_sync_port,
            timeout_seconds=config.weight_sync_timeout_seconds,
        ),
    )


@contextlib.asynccontextmanager
async def http_api(
    config: LearnerConfig, jobs: JobManager, files: FileStore, settings: TrainerSettings, names: ModelNames
):
    """The OpenAI-compatible HTTP API on --http-port (nothing when it is 0)."""
    if not config.http_port:
        yield None
        return
    from rft.grader.v1 import grader_pb2_grpc
    from rft_common.client import FOREIGN_PINGS_WITHOUT_DATA, aio_channel

    from rft_learner.http_api.app import ApiContext, build_app
    from rft_learner.http_api.inference import InferenceServers, InferenceSettings
    from rft_learner.http_api.server import HttpApiServer

    keys = ApiKeys.load(config.api_keys_file, config.resolved_auth_token())
    if not keys.required and config.http_host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the HTTP API takes no API key: every caller is tenant 'default' (set --api-keys-file)")
    inference = InferenceServers(
        InferenceSettings(
            max_models=config.inference_max_models,
            kv_cache_gib=config.inference_kv_cache_gib,
            gpu_memory_utilization=config.inference_gpu_memory_utilization,
            start_timeout_seconds=config.inference_start_timeout_seconds,
            log_dir=pathlib.Path(config.data_dir) / "inference",
        )
    )
    channel = aio_channel(
        settings.grader_address,
        token=settings.grader_token,
        tls_ca_file=settings.tls_ca_file,
        pings_without_data=FOREIGN_PINGS_WITHOUT_DATA,  # a customer's grader may be any gRPC server
    )
    context = ApiContext(
        jobs=jobs,
        files=files,
        keys=keys,
        names=names,
        grader=grader_pb2_grpc.GraderServiceStub(channel),
        inference=inference,
    )
    server = HttpApiServer(
        build_app(context, config.max_file_bytes, config.console_dir),
        config.http_host,
        config.http_port,
        config.tls_cert_file,
        config.tls_key_file,
    )
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        await inference.close()
        await channel.close()


async def serve(config: LearnerConfig) -> None:
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    data_dir = pathlib.Path(config.data_dir)
    db = Database(data_dir / "learner.db")
    settings = trainer_settings(config)
    try:
        files = FileStore(db, data_dir / "files", config.max_file_bytes, config.max_line_bytes)
        store = JobStore(db)
        names = ModelNames(ModelCatalogue.parse(config.model_catalogue), store)
        async with (
            JobManager(store, files, LearnerSettings(settings)) as jobs,
            GrpcServer(config, "learner", ApiKeys.load(config.api_keys_file)) as server,
        ):
            server.add_service(files_pb2_grpc.add_FilesServiceServicer_to_server, FilesServicer(files), FILES_SERVICE)
            server.add_service(
                fine_tuning_pb2_grpc.add_FineTuningServiceServicer_to_server,
                FineTuningServicer(jobs, names),
                JOBS_SERVICE,
            )
            await server.start()
            async with http_api(config, jobs, files, settings, names):
                await server.set_serving(True)
                await server.wait_for_termination()
    finally:
        db.close()
