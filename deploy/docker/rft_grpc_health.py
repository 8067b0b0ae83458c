#!/usr/bin/env python3
"""Exec probe for a service that serves gRPC over TLS: `rft-grpc-health --port 50052`.

Kubelet's native gRPC probes speak plaintext only, so when components/tls turns TLS
on, the probes run this instead: one grpc.health.v1 Check over TLS to the local port,
exit 0 when SERVING, 1 otherwise. The images install it as /usr/local/bin/rft-grpc-health.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(port: int, service: str, ca_file: str, server_name: str, timeout: float, host: str = "127.0.0.1") -> str:
    """The serving status name, or 'UNREACHABLE: <code>' when the call fails."""
    if ca_file:
        creds = grpc.ssl_channel_credentials(root_certificates=pathlib.Path(ca_file).read_bytes())
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(f"{host}:{port}", creds, options=options)
    else:
        channel = grpc.insecure_channel(f"{host}:{port}")
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"UNREACHABLE: {exc.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rft-grpc-health", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="local gRPC port")
    parser.add_argument("--service", default="", help="grpc.health.v1 service name; empty = whole server")
    parser.add_argument("--ca-file", default="", help="PEM CA that signed the server certificate; empty = plaintext")
    parser.add_argument("--server-name", default="", help="name the certificate is checked against")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds")
    args = parser.parse_args(argv)
    status = check(args.port, args.service, args.ca_file, args.server_name, args.timeout)
    if status != "SERVING":
        print(status, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
