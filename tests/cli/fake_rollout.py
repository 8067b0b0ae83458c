"""A stand-in for `rft-rollout serve` in the CLI tests, without vLLM.

Same command line as the real one (`serve --model DIR --host H --port P ...`), health
NOT_SERVING for a moment and then SERVING, Generate / GetModelInfo, and a graceful stop
on SIGTERM. The "model" answers "a+b=" prompts as a ranked list: DIR/style "good" puts
the sum first, "bad" puts it third, "hang" never becomes SERVING. Every request and the SIGTERM are logged to DIR/calls.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import re
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc


class FakeRollout(rollout_pb2_grpc.RolloutServiceServicer):
    def __init__(self, model: pathlib.Path) -> None:
        self.model = model
        self.style = (model / "style").read_text().strip()

    def log(self, line: str) -> None:
        with (self.model / "calls").open("a") as handle:
            handle.write(line + "\n")

    def answer(self, prompt: str) -> str:
        a, b = (int(x) for x in re.findall(r"\d+", prompt)[:2])
        return f"{a + b}, 0" if self.style == "good" else f"0, 1, {a + b}"

    async def Generate(self, request, context):
        sampling = request.sampling
        self.log(f"generate prompts={len(request.prompts)} n={sampling.n} temperature={sampling.temperature}")
        if len(request.prompts) > 8:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_prompts is 8")
        results = []
        for index, prompt in enumerate(request.prompts):
            text = self.answer(prompt.chat.messages[-1].content)
            samples = [
                rollout_pb2.Sample(prompt_index=index, sample_index=j, text=text, finish_reason=1)
                for j in range(sampling.n or 1)
            ]
            results.append(rollout_pb2.PromptResult(prompt_index=index, samples=samples))
        return rollout_pb2.GenerateResponse(results=results)

    async def GetModelInfo(self, request, context):
        limits = rollout_pb2.RequestLimits(max_prompts=8, max_n=16, max_tokens=512, max_prompt_tokens=512)
        return rollout_pb2.GetModelInfoResponse(model=str(self.model), limits=limits, engine="fake")


async def serve(args: argparse.Namespace) -> None:
    servicer = FakeRollout(pathlib.Path(args.model))
    server = grpc.aio.server()
    rollout_pb2_grpc.add_RolloutServiceServicer_to_server(servicer, server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(f"{args.host}:{args.port}")
    await checker.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    servicer.log("started")  # tests send SIGTERM as soon as they read this
    await asyncio.sleep(0.5)  # "loading the engine"
    if servicer.style != "hang":
        await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    await stop.wait()
    servicer.log("SIGTERM")
    await checker.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-port")
    parser.add_argument("--log-format")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
