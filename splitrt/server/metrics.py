"""Prometheus metrics of the tail server, served on their own HTTP port.

Names follow Prometheus' conventions: a unit suffix (``_bytes``, ``_seconds``), ``_total``
on counters (the client library adds it), and labels of bounded sets of values: the model,
its split point, the codec family (``jpeg``, not ``jpeg:75``) and the gRPC status.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class SplitSeries:
    """The series of one model at one split point, looked up once (``labels()`` validates its values
    and takes a lock on every call: per frame, on the event loop, that adds up)."""

    decode: Histogram
    queue: Histogram
    tail: Histogram
    frame_latency: Histogram
    batch_size: Histogram
    bytes_in: Counter


class ServerMetrics:
    """One registry per server instance (tests start several in one process).

    Labelled series are cached per label values: the values come from what the server serves
    (models, their split points, codec families), a bounded set, never from a client's raw text.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "split"]

        def seconds(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, labels, buckets=_LATENCY_BUCKETS, registry=self.registry)

        self.requests = Counter(
            "splitrt_requests", "Frames decoded for a tail", ["model", "split", "codec"], registry=self.registry
        )
        self.bytes_in = Counter(
            "splitrt_received_payload_bytes", "Payload bytes of decoded frames", labels, registry=self.registry
        )
        self.errors = Counter(
            "splitrt_errors",
            "Frames refused or failed, by model ('(unknown)' for names not served) and gRPC status",
            ["model", "code"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "splitrt_frames_in_flight", "Frames being decoded or run", ["model"], registry=self.registry
        )
        self.decode = seconds("splitrt_decode_seconds", "Payload decode time")
        self.queue = seconds("splitrt_queue_seconds", "Wait for a turn and the tail worker")
        self.tail = seconds("splitrt_tail_seconds", "Tail compute time")
        self.frame_latency = seconds(
            "splitrt_request_duration_seconds", "Time in the server per frame, from arrival to its answer built"
        )
        self.batch_size = Histogram(
            "splitrt_batch_size", "Frames per tail call", labels, buckets=_BATCH_BUCKETS, registry=self.registry
        )

        self._split_series: dict[tuple[str, str], SplitSeries] = {}
        self._requests: dict[tuple[str, str, str], Counter] = {}
        self._in_flight: dict[str, Gauge] = {}

    def split_series(self, model: str, split: str) -> SplitSeries:
        series = self._split_series.get((model, split))
        if series is None:
            labelled = (self.decode, self.queue, self.tail, self.frame_latency, self.batch_size, self.bytes_in)
            series = self._split_series[model, split] = SplitSeries(*(m.labels(model, split) for m in labelled))
        return series

    def requests_of(self, model: str, split: str, codec_family: str) -> Counter:
        key = (model, split, codec_family)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(*key)
        return counter

    def in_flight_of(self, model: str) -> Gauge:
        gauge = self._in_flight.get(model)
        if gauge is None:
            gauge = self._in_flight[model] = self.in_flight.labels(model)
        return gauge

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port
