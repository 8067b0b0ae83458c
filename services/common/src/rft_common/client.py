"""Client channels to RFT services, with TLS, bearer tokens and retries."""

from __future__ import annotations

import json
import pathlib

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CLIENT_STREAMING_METHODS = (
    ("rft.rollout.v1.RolloutService", "UpdateWeights"),
    ("rft.learner.v1.FilesService", "UploadFile"),
)
"""Calls gRPC must never retry by itself. It would replay a retried stream's messages from
a buffer far smaller than a weight push or an upload, and its retry path for streams
wedged a weight push for good after the rollout restarted (gRPC 1.85 logged "ILLEGAL
STATE: FORWARDED_BATCH", and the call never ended, deadline or not). Their callers
restart the whole stream (RolloutPool) or report the failure (`rft files upload`)."""

# Retry transient failures of idempotent-safe calls with exponential backoff. gRPC only
# retries before any response byte arrived, so a retried call never duplicates output.
# The most specific method config wins: the streaming methods' entry has no retries.
_RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            },
            {"name": [{"service": service, "method": method} for service, method in CLIENT_STREAMING_METHODS]},
        ]
    }
)


class BearerToken(grpc.AuthMetadataPlugin):
    """Adds 'authorization: Bearer <token>' to every call."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, context, callback) -> None:
        callback((("authorization", f"Bearer {self._token}"),), None)


KEEPALIVE_SECONDS = 30.0
"""How long a connection with calls in flight may stay silent before the client pings it.
A peer that vanished without closing its sockets (a node lost, a frozen process) then
fails the calls UNAVAILABLE, and they are retried, instead of waiting out their deadline
(ten minutes for a Generate)."""
KEEPALIVE_TIMEOUT_SECONDS = 20.0
"""How long a ping may go unanswered before the connection is dropped."""
SUITE_PINGS_WITHOUT_DATA = 0
"""Pings per silent stretch to the suite's own servers: no limit (server.py accepts them)."""
FOREIGN_PINGS_WITHOUT_DATA = 2
"""Pings per silent stretch to a server we do not run (a customer's grader): gRPC's default
server policy takes a third ping within 5 minutes of silence as abuse and drops the
connection, under a long Grade. Two still catch a peer that is gone from the start."""
RECONNECT_BACKOFF_MAX_SECONDS = 5.0
"""The longest wait between attempts to reconnect to a peer that went away (gRPC adds up
to 20% jitter). gRPC's default, 120 s, would leave a replica that restarted in seconds
without traffic for minutes; these channels have a handful of peers, so trying often
costs nothing."""


def channel_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    retries: bool = True,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    keepalive_timeout_seconds: float = KEEPALIVE_TIMEOUT_SECONDS,
    pings_without_data: int = SUITE_PINGS_WITHOUT_DATA,
) -> list[tuple[str, object]]:
    """gRPC channel options shared by every client of the suite. The keepalive pings are
    only sent while calls are in flight; `pings_without_data` bounds them per stretch of
    silence (0: no bound, for the suite's servers, which accept them: server.py)."""
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1 if retries else 0),
        ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_seconds * 1000)),
        # gRPC core closes a connection on an unanswered ping after this one, not after
        # the keepalive timeout (its default is a minute).
        ("grpc.http2.ping_timeout_ms", int(keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", int(RECONNECT_BACKOFF_MAX_SECONDS * 1000)),
    ]
    if retries:
        options.append(("grpc.service_config", _RETRY_SERVICE_CONFIG))
    return options


def aio_channel(
    address: str,
    *,
    tls_ca_file: str = "",
    tls_cert_file: str = "",
    tls_key_file: str = "",
    token: str = "",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    retries: bool = True,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    keepalive_timeout_seconds: float = KEEPALIVE_TIMEOUT_SECONDS,
    pings_without_data: int = SUITE_PINGS_WITHOUT_DATA,
) -> grpc.aio.Channel:
    """An asyncio channel to `address` (host:port).

    TLS is on when `tls_ca_file` is given; `tls_cert_file` + `tls_key_file` add a client
    certificate for mutual TLS. A token is only sent over TLS or to a loopback address.
    """
    options = channel_options(
        max_message_bytes, retries, keepalive_seconds, keepalive_timeout_seconds, pings_without_data
    )
    if not tls_ca_file:
        if token:
            # grpc refuses call credentials on insecure channels; use local credentials
            # (loopback / UDS), which are still unencrypted but local-only.
            creds = grpc.composite_channel_credentials(
                grpc.local_channel_credentials(), grpc.metadata_call_credentials(BearerToken(token))
            )
            return grpc.aio.secure_channel(address, creds, options=options)
        return grpc.aio.insecure_channel(address, options=options)
    root = pathlib.Path(tls_ca_file).read_bytes()
    key = pathlib.Path(tls_key_file).read_bytes() if tls_key_file else None
    cert = pathlib.Path(tls_cert_file).read_bytes() if tls_cert_file else None
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.metadata_call_credentials(BearerToken(token)))
    return grpc.aio.secure_channel(address, creds, options=options)
