"""Prometheus metrics of the tail server, served on their own HTTP port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServerMetrics:
    """One registry per server instance (tests start several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "split"]
        self.requests = Counter(
            "splitrt_requests", "Frames received", ["model", "split", "codec"], registry=self.registry
        )
        self.bytes_in = Counter("splitrt_bytes_in", "Payload bytes received", labels, registry=self.registry)
        self.errors = Counter(
            "splitrt_errors", "Frames refused or failed, by gRPC status", ["code"], registry=self.registry
        )
        self.in_flight = Gauge(
            "splitrt_frames_in_flight", "Frames being decoded or run", ["model"], registry=self.registry
        )
        self.decode = Histogram(
            "splitrt_decode_seconds", "Payload decode time", labels, buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.queue = Histogram(
            "splitrt_queue_seconds",
            "Wait for the tail worker",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tail = Histogram(
            "splitrt_tail_seconds", "Tail compute time", labels, buckets=_LATENCY_BUCKETS, registry=self.registry
        )

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port
