"""Wires the grader's core and servicer into the shared gRPC server."""

from __future__ import annotations

from rft.grader.v1 import grader_pb2_grpc
from rft_common.server import GrpcServer

from rft_grader.config import GraderConfig
from rft_grader.servicer import SERVICE_NAME, GraderServicer


async def serve(config: GraderConfig) -> None:
    async with GrpcServer(config, "grader") as server:
        server.add_service(grader_pb2_grpc.add_GraderServiceServicer_to_server, GraderServicer(), SERVICE_NAME)
        await server.start()
        await server.set_serving(True)
        await server.wait_for_termination()
