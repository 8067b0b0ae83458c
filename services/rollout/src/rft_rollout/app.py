"""Wires the rollout engine and servicer into the shared gRPC server."""

from __future__ import annotations

from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_common.server import GrpcServer

from rft_rollout.config import RolloutConfig

SERVICE_NAME = rollout_pb2.DESCRIPTOR.services_by_name["RolloutService"].full_name


async def serve(config: RolloutConfig) -> None:
    async with GrpcServer(config, "rollout") as server:
        # The engine lands with the rollout issue; until then every RPC is UNIMPLEMENTED
        # and health stays NOT_SERVING.
        server.add_service(
            rollout_pb2_grpc.add_RolloutServiceServicer_to_server,
            rollout_pb2_grpc.RolloutServiceServicer(),
            SERVICE_NAME,
        )
        await server.start()
        await server.wait_for_termination()
