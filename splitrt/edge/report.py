"""The per-frame table and the end-of-run summary the edge prints."""

from __future__ import annotations

import statistics

from ..stats import percentile
from .frames import FrameResult

COLUMNS = [
    ("frame", 6),
    ("mode", 8),
    ("split", 22),
    ("codec", 10),
    ("bytes", 9),
    ("head ms", 8),
    ("net ms", 8),
    ("server ms", 9),
    ("total ms", 9),
    ("dets>.5", 7),
]


def header() -> str:
    return " ".join(f"{name:>{width}}" for name, width in COLUMNS)


def row(result: FrameResult) -> str:
    """One frame.  An adaptive frame shows the configuration it ran (``exit@features.6``,
    ``local@80``, a hedge as ``X + exit@...``) and its latency from capture, what its deadline
    is judged by; ``LATE`` marks a missed deadline."""
    t = result.timings_ms
    where, total = result.split, t.get("total")
    decision = result.extra.get("decision")
    if decision is not None:
        where = decision["config"] if result.mode != "fallback" or "hedge" not in decision else decision["hedge"]
        where = where.removesuffix("/" + result.codec)  # the codec has its own column
        total = result.extra.get("latency_ms", total)
    cells = [
        result.frame_id,
        result.mode,
        where,
        result.codec,
        result.wire_bytes,
        _fmt(t.get("head", 0.0) + t.get("encode", 0.0)) if t else "-",
        _fmt(t.get("network")),
        _fmt(t.get("server")),
        _fmt(total),
        result.confident() if result.ok else "-",
    ]
    line = " ".join(f"{str(c)[:w]:>{w}}" for c, (_, w) in zip(cells, COLUMNS))
    if result.extra.get("deadline_met") is False:
        line += "  LATE"
    return line + (f"  ! {result.error}" if result.error else "")


def summary(results: list[FrameResult], deadline_ms: float | None = None) -> str:
    """Counts, bytes and latencies; with a deadline, how many frames met it, judged exactly as the
    table's LATE marks (latency from capture; skipped and timed-out frames miss it)."""
    ok = [r for r in results if r.ok and r.mode not in ("skipped", "timeout")]
    missed = sum(1 for r in results if r.mode in ("skipped", "timeout"))
    errors = sum(1 for r in results if not r.ok)
    lines = [f"frames: {len(results)}  answered: {len(ok)}  errors: {errors}"]
    if missed:
        lines[0] += f"  skipped or timed out: {missed}"
    if ok:
        totals = sorted(r.timings_ms.get("total", 0.0) for r in ok)
        lines.append(
            f"bytes/frame: mean {statistics.fmean(r.wire_bytes for r in ok):.0f}  "
            f"total ms: p50 {percentile(totals, 50):.1f}  p95 {percentile(totals, 95):.1f}  "
            f"detections/frame (score >= 0.5): {statistics.fmean(r.confident() for r in ok):.2f}"
        )
    decided = [r for r in results if "deadline_met" in r.extra]
    if decided:
        configs = [r.extra["decision"]["config"] for r in decided]
        switches = sum(1 for a, b in zip(configs, configs[1:]) if a != b)
        modes: dict[str, int] = {}
        for r in decided:
            modes[r.mode] = modes.get(r.mode, 0) + 1
        met = sum(1 for r in decided if r.extra["deadline_met"])
        latency = sorted(r.extra["latency_ms"] for r in decided)
        within = f" of {deadline_ms:g} ms" if deadline_ms is not None else ""
        lines.append(
            f"deadline{within} met: {met}/{len(decided)} frames ({100 * met / len(decided):.1f}%)  "
            f"latency from capture: p50 {percentile(latency, 50):.1f}  p95 {percentile(latency, 95):.1f} ms  "
            f"configuration switches: {switches}  modes: " + ", ".join(f"{k} {v}" for k, v in sorted(modes.items()))
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
