"""Wires the learner's stores and servicers into the shared gRPC server."""

from __future__ import annotations

import pathlib

from rft.learner.v1 import files_pb2_grpc
from rft_common.server import GrpcServer

from rft_learner.config import LearnerConfig
from rft_learner.db import Database
from rft_learner.files import FileStore
from rft_learner.files_servicer import SERVICE_NAME as FILES_SERVICE
from rft_learner.files_servicer import FilesServicer


async def serve(config: LearnerConfig) -> None:
    data_dir = pathlib.Path(config.data_dir)
    db = Database(data_dir / "learner.db")
    try:
        files = FileStore(db, data_dir / "files", config.max_file_bytes, config.max_line_bytes)
        async with GrpcServer(config, "learner") as server:
            server.add_service(files_pb2_grpc.add_FilesServiceServicer_to_server, FilesServicer(files), FILES_SERVICE)
            await server.start()
            await server.set_serving(True)
            await server.wait_for_termination()
    finally:
        db.close()
