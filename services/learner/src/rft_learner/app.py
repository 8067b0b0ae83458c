"""Wires the learner's stores, job manager and servicers into the shared gRPC server."""

from __future__ import annotations

import pathlib

from rft.learner.v1 import files_pb2_grpc, fine_tuning_pb2_grpc
from rft_common.server import GrpcServer

from rft_learner.config import LearnerConfig
from rft_learner.db import Database
from rft_learner.files import FileStore
from rft_learner.files_servicer import SERVICE_NAME as FILES_SERVICE
from rft_learner.files_servicer import FilesServicer
from rft_learner.job_store import JobStore
from rft_learner.jobs import JobManager, LearnerSettings
from rft_learner.jobs_servicer import SERVICE_NAME as JOBS_SERVICE
from rft_learner.jobs_servicer import FineTuningServicer
from rft_learner.trainer.devices import resolve_placement
from rft_learner.trainer.loop import TrainerSettings


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
    )


async def serve(config: LearnerConfig) -> None:
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    data_dir = pathlib.Path(config.data_dir)
    db = Database(data_dir / "learner.db")
    try:
        files = FileStore(db, data_dir / "files", config.max_file_bytes, config.max_line_bytes)
        async with (
            JobManager(JobStore(db), files, LearnerSettings(trainer_settings(config))) as jobs,
            GrpcServer(config, "learner") as server,
        ):
            server.add_service(files_pb2_grpc.add_FilesServiceServicer_to_server, FilesServicer(files), FILES_SERVICE)
            server.add_service(
                fine_tuning_pb2_grpc.add_FineTuningServiceServicer_to_server, FineTuningServicer(jobs), JOBS_SERVICE
            )
            await server.start()
            await server.set_serving(True)
            await server.wait_for_termination()
    finally:
        db.close()
