"""`splitrt-server`: load models, serve gRPC with health and reflection, stop cleanly."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from ..defaults import DEMO_MODEL
from ..logs import configure_logging
from ..models.spec import ModelSpec, load_config, parse_model_flag, parse_options
from ..threads import apply_threads, server_threads
from ..wire import kserve_v2_pb2 as pb
from ..wire import kserve_v2_pb2_grpc as pb_grpc
from .admission import AdmissionLimits
from .batching import TailBatcher
from .metrics import ServerMetrics
from .repository import ModelRepository, check_device
from .security import (
    TOKENS_ENV,
    RateLimiter,
    TokenAuthInterceptor,
    is_loopback,
    load_tokens,
    server_credentials,
)
from .service import INLINE_JOB_MS, STREAM_CONCURRENCY, InferenceService

log = logging.getLogger("splitrt.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: Largest request gRPC reads: a raw 4K image (the largest frame any codec decodes) fits.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: How often health follows overload (NOT_SERVING while frames are being refused for lack of room).
HEALTH_POLL_S = 0.2
DEFAULT_MODEL = DEMO_MODEL  # the shipped, trained detector


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitrt-server",
        description="Serve the tails of split models over the KServe v2 / Triton gRPC protocol.",
        epilog="Example: splitrt-server --port 8001 --model shapes_fcos",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8001, help="port to listen on; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[NAME=]ARCH",
        help=f"model to serve, from the zoo (repeatable; default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--weights", help="safetensors weights for --model (default: deterministic untrained weights)")
    parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option passed to the model builder, e.g. num_classes=4 (repeatable)",
    )
    parser.add_argument("--config", help="TOML file with [[models]] tables (name, arch, weights, options)")
    parser.add_argument(
        "--device", default="cpu", help="torch device for the tails: cpu, cuda, cuda:1 (default: %(default)s)"
    )
    parser.add_argument("--fp16", action="store_true", help="run tails in half precision (CUDA only)")
    compute = parser.add_argument_group("compute threads (see docs/DESIGN.md, thread policy)")
    compute.add_argument(
        "--instances",
        type=int,
        default=1,
        help="tail workers per model, each running one frame at once (like Triton instance groups; default: 1)",
    )
    compute.add_argument(
        "--threads",
        type=int,
        help="torch threads per tail worker; 0 keeps torch's own default (default: the cores this process "
        "may use, divided by --instances)",
    )
    compute.add_argument(
        "--inline-ms",
        type=float,
        default=INLINE_JOB_MS,
        help="with one instance, frames whose decode and tail took at most this long run on the server's "
        "event loop, saving two thread hand-overs per frame; 0 turns it off (default: %(default)s)",
    )
    compute.add_argument(
        "--decode-workers",
        type=int,
        help="threads decoding payloads (default: --instances, at least 1)",
    )
    batching = parser.add_argument_group("dynamic batching (across clients, per model and split point)")
    batching.add_argument(
        "--max-batch", type=int, default=1, help="frames per tail call; 1 turns batching off (default: %(default)s)"
    )
    batching.add_argument(
        "--batch-delay-ms",
        type=float,
        default=5.0,
        help="how long a frame may wait for others to fill its batch (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connection-age-s",
        type=float,
        default=0.0,
        help="end each client connection after this long so edges rebalance over replicas (default: never)",
    )
    security = parser.add_argument_group("security and limits")
    security.add_argument("--tls-cert", help="PEM certificate chain of this server (enables TLS)")
    security.add_argument("--tls-key", help="PEM private key of this server")
    security.add_argument(
        "--tls-ca", help="PEM CA bundle; when given, clients must present certificates it signed (mTLS)"
    )
    security.add_argument(
        "--auth-token-file",
        help=f"file of accepted bearer tokens, one per line (also ${TOKENS_ENV}, comma-separated); "
        "health checks stay open",
    )
    security.add_argument(
        "--max-rate",
        type=float,
        default=1000.0,
        help="frames per second per client, bursts of twice that; 0 = no limit (default: %(default)s)",
    )
    security.add_argument(
        "--max-in-flight",
        type=int,
        default=STREAM_CONCURRENCY,
        help="frames of one stream processed or waiting to be sent at once (default: %(default)s)",
    )
    defaults = AdmissionLimits()
    security.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queued,
        help="frames waiting per model before new ones are refused (default: %(default)s)",
    )
    security.add_argument(
        "--max-queue-per-client",
        type=int,
        default=defaults.max_queued_per_client,
        help="frames one client may have waiting per model; turns go round-robin by client (default: %(default)s)",
    )
    security.add_argument(
        "--max-queued-total",
        type=int,
        default=defaults.max_total,
        help="frames admitted across all models (default: %(default)s)",
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0 picks one)")
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (default: %(default)s)"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"], help="json: one object per line")
    return parser


def connection_age_options(max_age_s: float) -> list[tuple[str, int]]:
    """Close connections after ``max_age_s`` (GOAWAY, then a grace period for frames in flight).

    Behind an L7 load balancer a long-lived stream stays on the replica it started on;
    ending connections now and then (the edge reconnects and resends) spreads edges over
    replicas that were added since.
    """
    if max_age_s <= 0:
        return []
    return [("grpc.max_connection_age_ms", int(max_age_s * 1000)), ("grpc.max_connection_age_grace_ms", 10_000)]


def bind_address(host: str, port: int) -> str:
    """``host:port`` as gRPC wants it; an IPv6 address goes in brackets (``[::]:8001``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def reflection_pool():
    """splitrt's private descriptor pool (see splitrt/wire/pool.py), with the health and reflection
    protocols added, so that reflection describes all three services."""
    from google.protobuf.descriptor_pool import Default

    from ..wire.pool import POOL

    for name in (health_pb2.DESCRIPTOR.name, reflection_pb2.DESCRIPTOR.name):
        try:
            POOL.FindFileByName(name)
        except KeyError:
            POOL.AddSerializedFile(Default().FindFileByName(name).serialized_pb)
    return POOL


async def follow_overload(service: InferenceService, health_servicer) -> None:
    """Health says NOT_SERVING while the server refuses frames for lack of room, so balancers steer away."""
    serving = True
    while True:
        await asyncio.sleep(HEALTH_POLL_S)
        if serving == service.overloaded:
            serving = not serving
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", SERVICE_NAME):
                await health_servicer.set(name, status)
            log.warning("overload: health %s", "SERVING again" if serving else "NOT_SERVING while frames are refused")


def model_specs(args: argparse.Namespace) -> list[ModelSpec]:
    specs = load_config(args.config) if args.config else []
    options = parse_options(args.model_option)
    names = args.model or ([] if specs else [DEFAULT_MODEL])
    specs += [parse_model_flag(name, args.weights, options) for name in names]
    return specs


async def serve(args: argparse.Namespace, specs: list[ModelSpec]) -> int:
    repository = ModelRepository()
    metrics = ServerMetrics()
    credentials = server_credentials(args.tls_cert, args.tls_key, args.tls_ca)
    tokens = load_tokens(args.auth_token_file)
    admission = AdmissionLimits(
        # Batching needs a batch's worth of frames decoded and waiting.  Without it, one frame more than
        # there are tail instances: the next frame decodes while the tails run and is handed to a worker
        # the moment one frees up, and a waiting client still waits for at most one extra frame.
        concurrency=args.instances + 1 if args.max_batch <= 1 else args.max_batch + 1,
        max_queued=args.max_queue,
        max_queued_per_client=args.max_queue_per_client,
        max_total=args.max_queued_total,
    )
    service = InferenceService(
        repository,
        args.device + (":fp16" if args.fp16 else ""),
        metrics,
        RateLimiter(args.max_rate),
        stream_concurrency=args.max_in_flight,
        decode_workers=args.decode_workers or args.instances,
        admission=admission,
        authenticated=bool(tokens),
        inline_job_ms=args.inline_ms,
    )
    interceptors = [TokenAuthInterceptor(tokens)] if tokens else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Let clients ping every 60 s on idle streams (gRPC's server default refuses pings under 5 min).
            ("grpc.http2.min_ping_interval_without_data_ms", 60_000),
            ("grpc.keepalive_permit_without_calls", 1),
            *connection_age_options(args.max_connection_age_s),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server, pool=reflection_pool()
    )
    address = bind_address(args.host, args.port)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        log.error("could not listen on %s", address)
        return 2
    if credentials is None and not is_loopback(args.host):
        log.warning(
            "\n%s\nWARNING: listening on %s WITHOUT TLS: features, results and tokens cross the network in the "
            "clear.\nUse --tls-cert/--tls-key (and --tls-ca for client certificates).\n%s",
            "!" * 78,
            args.host,
            "!" * 78,
        )
    if args.metrics_port is not None:
        metrics_port = metrics.serve(args.metrics_host, args.metrics_port)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, metrics_port)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    log.info(
        "listening on %s:%d (%s%s; live, loading %d model(s))",
        args.host,
        port,
        "mTLS" if args.tls_ca else "TLS" if credentials else "plaintext",
        ", token auth" if tokens else "",
        len(specs),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    loading = loop.run_in_executor(None, repository.load, specs, args.device, args.fp16, args.instances)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, waiter], return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        loading.result()  # re-raises a failed load
        if args.max_batch > 1:
            for served in repository.models():
                served.batcher = TailBatcher(served, args.max_batch, args.batch_delay_ms / 1e3)
            log.info("dynamic batching: up to %d frames, %.1f ms delay", args.max_batch, args.batch_delay_ms)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "ready: serving %s on %s:%d",
            ", ".join(repository.names()),
            args.host,
            port,
            extra={"models": ",".join(repository.names()), "port": port},
        )
        watcher = asyncio.create_task(follow_overload(service, health_servicer))
        await waiter
        watcher.cancel()
    log.info("shutting down: no new frames, finishing those in flight")
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace=5.0)
    repository.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        if args.instances < 1:
            raise ValueError(f"--instances must be at least 1, not {args.instances}")
        threads = apply_threads(args.threads, server_threads(args.instances))
        log.info("compute: %d tail instance(s) per model, %d torch thread(s) each", args.instances, threads)
        check_device(args.device, args.fp16)
        specs = model_specs(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"splitrt-server: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(args, specs))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        log.error("could not start: %s", exc, extra={"reason": type(exc).__name__})
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
