"""A real rft.tools.v1 gRPC tool service for the episode tests: one tool, `add`.

It demands the metadata `authorization: Bearer <--token>` (the credential the rollout
service's tool-servers file holds), and its `x-mode` metadata picks how `add` behaves,
so that one process stands for several servers:

    ok    the sum as text
    error is_error with a message
    slow  sleeps 30 s (past any test timeout)
    pause sleeps 4 s, then the sum (time for a weight update mid-episode)
    huge  the sum followed by 100,000 "x"

    python grpc_tools.py --port 0 --token secret   (prints "PORT <n>" when serving)
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from google.protobuf import struct_pb2
from rft.tools.v1 import tools_pb2, tools_pb2_grpc

ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


class Tools(tools_pb2_grpc.ToolServiceServicer):
    def __init__(self, token: str) -> None:
        self.token = token

    async def _check(self, context) -> str:
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Bearer {self.token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
        return metadata.get("x-mode", "ok")

    async def ListTools(self, request, context):
        await self._check(context)
        schema = struct_pb2.Struct()
        schema.update(ADD_SCHEMA)
        return tools_pb2.ListToolsResponse(
            tools=[tools_pb2.Tool(name="add", description="Add two integers.", input_schema=schema)]
        )

    async def CallTool(self, request, context):
        mode = await self._check(context)
        if request.name != "add":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown tool {request.name}")
        arguments = dict(request.arguments)
        try:
            total = int(arguments["a"]) + int(arguments["b"])
        except (KeyError, TypeError, ValueError) as exc:
            return tools_pb2.CallToolResponse(content=f"bad arguments: {exc!r}", is_error=True)
        if mode == "error":
            return tools_pb2.CallToolResponse(content="the adder is out of order", is_error=True)
        if mode == "slow":
            await asyncio.sleep(30)
        if mode == "pause":
            await asyncio.sleep(4)
        if mode == "huge":
            return tools_pb2.CallToolResponse(content=str(total) + "x" * 100_000)
        return tools_pb2.CallToolResponse(content=str(total))


async def serve(port: int, token: str) -> None:
    server = grpc.aio.server()
    tools_pb2_grpc.add_ToolServiceServicer_to_server(Tools(token), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"PORT {bound}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.token))
