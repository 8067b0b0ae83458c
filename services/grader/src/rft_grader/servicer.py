"""gRPC face of the grader: translates protobuf to the core and back."""

from __future__ import annotations

import grpc
from rft.grader.v1 import grader_pb2, grader_pb2_grpc

SERVICE_NAME = grader_pb2.DESCRIPTOR.services_by_name["GraderService"].full_name


class GraderServicer(grader_pb2_grpc.GraderServiceServicer):
    """RPCs not implemented yet answer UNIMPLEMENTED (the generated base's behaviour)."""

    async def ListGraderTypes(
        self, request: grader_pb2.ListGraderTypesRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.ListGraderTypesResponse:
        return grader_pb2.ListGraderTypesResponse()
