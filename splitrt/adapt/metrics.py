"""How a policy did: accuracy in time first, then hits, latency, skips and switching; and calibration.

A late frame is worth what reached the application by its deadline: a
hedged frame's local result, or nothing.  ``mean_accuracy`` (the mAP of
whatever was delivered, however late) is kept for reference only; it
flatters policies that deliver good results too late.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np


def summarize(policy: str, frames: Sequence[Any], deadline_ms: float) -> dict[str, Any]:
    latencies = np.array([f.latency_ms for f in frames if not math.isnan(f.latency_ms)])
    duration_min = (frames[-1].captured_s - frames[0].captured_s) / 60 if len(frames) > 1 else 1.0
    switches = sum(1 for a, b in zip(frames, frames[1:]) if a.config != b.config)
    return {
        "policy": policy,
        "frames": len(frames),
        "accuracy_in_time": statistics.fmean(f.accuracy_in_time for f in frames) if frames else 0.0,
        "hit_rate": float(np.mean([f.hit for f in frames])) if frames else 0.0,
        "p95_latency_ms": float(np.percentile(latencies, 95)) if latencies.size else math.nan,
        "mean_latency_ms": float(latencies.mean()) if latencies.size else math.nan,
        "skipped": sum(1 for f in frames if f.mode == "skipped"),
        "timeouts": sum(1 for f in frames if f.mode == "timeout"),
        "fallbacks": sum(1 for f in frames if f.mode == "fallback"),
        "switches": switches,
        "switches_per_min": switches / max(duration_min, 1e-9),
        "bytes_sent": int(sum(f.bytes_sent for f in frames)),
        "mean_accuracy": statistics.fmean(f.accuracy for f in frames) if frames else 0.0,
        "deadline_ms": deadline_ms,
    }


def reliability(frames: Sequence[Any], bins: int = 10) -> list[dict[str, Any]]:
    """Predicted ``p_in_time`` against how often the answer really came in time, per bin of the prediction."""
    pairs = [
        (f.p_in_time, f.arrived_in_time) for f in frames if f.p_in_time is not None and f.arrived_in_time is not None
    ]
    table = []
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [arrived for p, arrived in pairs if low <= p < high or (b == bins - 1 and p == 1.0)]
        if inside:
            predicted = statistics.fmean(p for p, _ in pairs if low <= p < high or (b == bins - 1 and p == 1.0))
            table.append(
                {"bin": f"{low:.1f}-{high:.1f}", "frames": len(inside), "predicted": predicted,
                 "observed": statistics.fmean(inside)}
            )  # fmt: skip
    return table


def calibration_error(table: list[dict[str, Any]], min_frames: int = 20) -> float | None:
    """The largest |predicted - observed| over bins holding at least ``min_frames`` frames (None: no such bin)."""
    gaps = [abs(row["predicted"] - row["observed"]) for row in table if row["frames"] >= min_frames]
    return max(gaps) if gaps else None


def pooled_reliability(tables: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Reliability tables of many runs as one (frames added, predictions and outcomes averaged by frames).

    A bin of one cell holds a few dozen frames: its observed share alone is off by about 10
    points from binomial noise even when the predictions are right.  Pooled over a grid, the
    bins hold thousands and show the bias itself."""
    pooled: dict[str, list[float]] = {}
    for table in tables:
        for row in table:
            acc = pooled.setdefault(row["bin"], [0.0, 0.0, 0.0])
            acc[0] += row["frames"]
            acc[1] += row["predicted"] * row["frames"]
            acc[2] += row["observed"] * row["frames"]
    return [
        {"bin": b, "frames": int(n), "predicted": p / n, "observed": o / n}
        for b, (n, p, o) in sorted(pooled.items())
        if n > 0
    ]


def format_reliability(table: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'bin':>9s} {'frames':>7s} {'predicted':>9s} {'observed':>9s}"]
    lines += [f"{r['bin']:>9s} {r['frames']:7d} {r['predicted']:9.2f} {r['observed']:9.2f}" for r in table]
    return lines
