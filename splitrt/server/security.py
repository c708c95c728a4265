"""TLS / mutual TLS credentials, bearer-token authentication and per-client rate limits."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path

import grpc

log = logging.getLogger("splitrt.server")

TOKENS_ENV = "SPLITRT_AUTH_TOKENS"
#: Calls that stay open without a token: load balancers and orchestrators probe health unauthenticated.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} file {file} does not exist")
    return file.read_bytes()


def server_credentials(cert: str | None, key: str | None, ca: str | None) -> grpc.ServerCredentials | None:
    """TLS when cert and key are given; mutual TLS (client certificates required) when ca is given too."""
    if cert is None and key is None:
        if ca is not None:
            raise ValueError("--tls-ca (mutual TLS) needs --tls-cert and --tls-key as well")
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    return grpc.ssl_server_credentials(
        [(_read(key, "TLS key"), _read(cert, "TLS certificate"))],
        root_certificates=_read(ca, "TLS CA"),
        require_client_auth=ca is not None,
    )


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_tokens(path: str | None) -> list[str]:
    """Accepted tokens: one per line in a file, and/or comma-separated in $SPLITRT_AUTH_TOKENS."""
    tokens = []
    if path is not None:
        raw = _read(path, "token")
        tokens += [line.strip() for line in raw.decode().splitlines() if line.strip() and not line.startswith("#")]
        if not tokens:
            raise ValueError(f"token file {path} holds no tokens")
    tokens += [t.strip() for t in os.environ.get(TOKENS_ENV, "").split(",") if t.strip()]
    return tokens


def token_identity(metadata: tuple | None) -> str | None:
    """A non-secret name for the caller's token (for rate limits and logs): a short hash, never the token."""
    token = _bearer(metadata)
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()[:12]


def _bearer(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call without a valid ``authorization: Bearer <token>`` header (health excepted)."""

    def __init__(self, tokens: list[str]) -> None:
        if not tokens:
            raise ValueError("token authentication needs at least one token")
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens]

    def _valid(self, metadata) -> bool:
        token = _bearer(metadata)
        if token is None:
            return False
        digest = hashlib.sha256(token.encode()).digest()
        return any(hmac.compare_digest(digest, d) for d in self._digests)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(PUBLIC_PREFIXES):
            return handler
        if self._valid(handler_call_details.invocation_metadata):
            return handler
        log.warning("refused %s: missing or invalid bearer token", handler_call_details.method)
        return _refusal(handler)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    message = "missing or invalid bearer token (send metadata 'authorization: Bearer <token>')"

    async def unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator, as stream handlers must be

    kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


class RateLimiter:
    """A token bucket per client: ``rate`` frames per second with bursts of ``burst``.

    The table holds at most ``max_clients`` buckets, the least recently seen dropped first,
    so a stream of made-up identities costs a bounded amount of memory.
    """

    def __init__(self, rate: float, burst: float | None = None, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        level, last = self._buckets.pop(client, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        allowed = level >= 1.0
        self._buckets[client] = (level - 1.0 if allowed else level, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed
