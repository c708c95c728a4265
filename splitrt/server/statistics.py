"""Per-model counters behind the ModelStatistics RPC (Triton's statistics extension).

Prometheus (`metrics.py`) keeps histograms for dashboards; this keeps the cumulative counts
and nanoseconds a Triton client (``get_inference_statistics``, perf_analyzer) reads.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from ..wire import kserve_v2_pb2 as pb


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += max(0, int(ns))

    def to_proto(self) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=self.count, ns=self.ns)


@dataclass
class BatchBook:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelBook:
    """What one model has done since the server started."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    executions: float = 0.0
    last_inference_ms: int = 0
    batches: dict[int, BatchBook] = field(default_factory=lambda: defaultdict(BatchBook))

    def answered(
        self, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int, batch_size: int = 1
    ) -> None:
        """One frame answered; a batch of ``batch_size`` frames shares one execution."""
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        self.compute_input.add(input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(output_ns)
        # The frames of a batch share its one execution: each counts for 1/batch_size of it.
        self.executions += 1 / max(1, batch_size)
        batch = self.batches[max(1, batch_size)]
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)
        self.last_inference_ms = int(time.time() * 1000)

    def failed(self, total_ns: int) -> None:
        self.fail.add(total_ns)

    def to_proto(self, name: str, version: str) -> pb.ModelStatistics:
        stats = pb.ModelStatistics(
            name=name,
            version=version,
            last_inference=self.last_inference_ms,
            inference_count=self.success.count,
            execution_count=round(self.executions),
            inference_stats=pb.InferStatistics(
                success=self.success.to_proto(),
                fail=self.fail.to_proto(),
                queue=self.queue.to_proto(),
                compute_input=self.compute_input.to_proto(),
                compute_infer=self.compute_infer.to_proto(),
                compute_output=self.compute_output.to_proto(),
                cache_hit=pb.StatisticDuration(),
                cache_miss=pb.StatisticDuration(),
            ),
        )
        for size in sorted(self.batches):
            book = self.batches[size]
            stats.batch_stats.add(
                batch_size=size,
                compute_input=book.compute_input.to_proto(),
                compute_infer=book.compute_infer.to_proto(),
                compute_output=book.compute_output.to_proto(),
            )
        return stats
