"""The gRPC channel to a server: TLS / mTLS, bearer token, keepalive, reconnect backoff."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
TOKEN_ENV = "SPLITRT_AUTH_TOKEN"


@dataclass
class ConnectionOptions:
    """How to reach a server. Plaintext unless a TLS file is given; a token is sent as ``Bearer``."""

    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    token_file: str | None = None

    def resolved_token(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file:
            path = Path(self.token_file)
            if not path.is_file():
                raise FileNotFoundError(f"token file {path} does not exist")
            token = path.read_text().strip().splitlines()[0].strip() if path.read_text().strip() else ""
            if not token:
                raise ValueError(f"token file {path} is empty")
            return token
        return os.environ.get(TOKEN_ENV) or None


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"TLS file {file} does not exist")
    return file.read_bytes()


def open_channel(target: str, options: ConnectionOptions, aio: bool = False) -> grpc.Channel:
    """A channel to the server with splitrt's limits, keepalive and reconnect settings (``aio``: grpc.aio)."""
    api = grpc.aio if aio else grpc
    channel_options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # Keepalive pings no more often than gRPC servers accept by default (5 minutes).
        ("grpc.keepalive_time_ms", 300_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Notice a restarted server quickly instead of after gRPC's default 1-120 s backoff.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    if options.tls_ca or options.tls_cert or options.tls_key:
        if bool(options.tls_cert) != bool(options.tls_key):
            raise ValueError("a client certificate needs both --tls-cert and --tls-key")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(options.tls_ca),
            private_key=_read(options.tls_key),
            certificate_chain=_read(options.tls_cert),
        )
        return api.secure_channel(target, credentials, options=channel_options)
    return api.insecure_channel(target, options=channel_options)


def call_metadata(options: ConnectionOptions) -> tuple[tuple[str, str], ...]:
    token = options.resolved_token()
    return (("authorization", f"Bearer {token}"),) if token else ()


class Backoff:
    """Exponential backoff with jitter, so many edges do not reconnect in lock-step."""

    def __init__(self, base_s: float = 0.25, cap_s: float = 5.0, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.failures = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


def is_transport_failure(exc: grpc.RpcError) -> bool:
    return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def describe_rpc_error(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)
