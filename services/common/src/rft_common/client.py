"""Client channels to RFT services, with TLS, bearer tokens and retries."""

from __future__ import annotations

import json
import pathlib

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Retry transient failures of idempotent-safe calls with exponential backoff. gRPC only
# retries before any response byte arrived, so a retried call never duplicates output.
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
            }
        ]
    }
)


class BearerToken(grpc.AuthMetadataPlugin):
    """Adds 'authorization: Bearer <token>' to every call."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, context, callback) -> None:
        callback((("authorization", f"Bearer {self._token}"),), None)


def channel_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, retries: bool = True
) -> list[tuple[str, object]]:
    """gRPC channel options shared by every client of the suite."""
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1 if retries else 0),
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
) -> grpc.aio.Channel:
    """An asyncio channel to `address` (host:port).

    TLS is on when `tls_ca_file` is given; `tls_cert_file` + `tls_key_file` add a client
    certificate for mutual TLS. A token is only sent over TLS or to a loopback address.
    """
    options = channel_options(max_message_bytes, retries)
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
