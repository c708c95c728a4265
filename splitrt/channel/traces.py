"""Uplink capacity traces: Mahimahi files, ``time_s,mbps`` CSV, constant and Gilbert–Elliott links.

A trace is the number of bytes the link can deliver in each millisecond of
one period; it loops, as Mahimahi's player does.  Delivery is treated as
uniform within a millisecond, so the capacity function is piecewise linear
and can be inverted exactly (``finish_time``), which is what both the
virtual-time simulator and the live shaping proxy need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAHIMAHI_PACKET_BYTES = 1500


class TraceError(ValueError):
    """A trace file that cannot be read as a bandwidth trace."""


@dataclass
class Trace:
    name: str
    ms_bytes: np.ndarray  # bytes deliverable in each millisecond of one period
    _cum: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ms_bytes = np.asarray(self.ms_bytes, dtype=np.float64)
        if self.ms_bytes.ndim != 1 or self.ms_bytes.size == 0:
            raise TraceError(f"trace {self.name!r} is empty")
        if (self.ms_bytes < 0).any() or not np.isfinite(self.ms_bytes).all():
            raise TraceError(f"trace {self.name!r} has negative or non-finite capacity")
        self._cum = np.concatenate([[0.0], np.cumsum(self.ms_bytes)])

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Trace:
        """A Mahimahi trace (one ms timestamp per 1500-byte opportunity) or a ``time_s,mbps`` CSV."""
        path = Path(path)
        if not path.is_file():
            raise TraceError(f"trace file {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() == ".csv" or "," in text.split("\n", 1)[0]:
            return cls.from_csv(text, path.name)
        return cls.from_mahimahi(text, path.name)

    @classmethod
    def from_mahimahi(cls, text: str, name: str = "mahimahi") -> Trace:
        try:
            stamps = np.array([int(line) for line in text.split() if line.strip()], dtype=np.int64)
        except ValueError as exc:
            raise TraceError(f"{name}: a Mahimahi trace holds one integer millisecond per line ({exc})") from None
        if stamps.size == 0:
            raise TraceError(f"{name}: no delivery opportunities")
        if (stamps < 0).any() or (np.diff(stamps) < 0).any():
            raise TraceError(f"{name}: timestamps must be non-negative and non-decreasing")
        # The period is the last timestamp (Mahimahi loops there): an opportunity at the last
        # millisecond is the first of the next loop.
        period = max(1, int(stamps[-1]))
        counts = np.bincount(stamps % period, minlength=period)
        return cls(name, counts * float(MAHIMAHI_PACKET_BYTES))

    @classmethod
    def from_csv(cls, text: str, name: str = "csv") -> Trace:
        """Rows ``time_s,mbps``: the rate holds from each time until the next row (the last row for 1 s)."""
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#") or line.lower().startswith("time"):
                continue
            try:
                t, rate = (float(v) for v in line.split(",")[:2])
            except ValueError:
                raise TraceError(f"{name}:{number}: expected 'time_s,mbps', got {line!r}") from None
            rows.append((t, rate))
        if not rows:
            raise TraceError(f"{name}: no rows")
        times = [t for t, _ in rows]
        if times != sorted(times) or times[0] < 0:
            raise TraceError(f"{name}: times must start at >= 0 and increase")
        ends = times[1:] + [times[-1] + 1.0]
        total_ms = int(round(ends[-1] * 1000))
        ms = np.zeros(total_ms)
        for (t, rate), end in zip(rows, ends):
            ms[int(round(t * 1000)) : int(round(end * 1000))] = rate * 1e6 / 8 / 1000
        return cls(name, ms)

    @classmethod
    def constant(cls, mbps: float, seconds: float = 60.0) -> Trace:
        return cls(f"constant-{mbps:g}mbps", np.full(int(seconds * 1000), mbps * 1e6 / 8 / 1000))

    def scaled_to(self, mbps: float) -> Trace:
        """The same shape (gaps, bursts) at a mean of ``mbps``: a real trace in another link's regime."""
        if mbps <= 0 or self.period_bytes <= 0:
            raise TraceError(f"cannot scale {self.name!r} to a mean of {mbps:g} Mbit/s")
        return Trace(f"{self.name}@{mbps:g}", self.ms_bytes * (mbps / self.mean_mbps))

    def with_outages(self, outages: list[tuple[float, float]]) -> Trace:
        """This trace with zero capacity during each ``(start_s, duration_s)``."""
        ms = self.ms_bytes.copy()
        for start, duration in outages:
            ms[int(start * 1000) : int((start + duration) * 1000)] = 0.0
        return Trace(f"{self.name}+outages", ms)

    def gilbert_elliott(
        self, p_good_to_bad: float, p_bad_to_good: float, bad_factor: float = 0.0, step_s: float = 0.1, seed: int = 0
    ) -> Trace:
        """Bursty degradation: a two-state Markov chain, stepped every ``step_s``, scales capacity by ``bad_factor``."""
        rng = np.random.default_rng(seed)
        step_ms = max(1, int(step_s * 1000))
        ms = self.ms_bytes.copy()
        bad = False
        for start in range(0, ms.size, step_ms):
            bad = rng.random() >= p_bad_to_good if bad else rng.random() < p_good_to_bad
            if bad:
                ms[start : start + step_ms] *= bad_factor
        return Trace(f"{self.name}+ge", ms)

    # -- queries -------------------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        return self.ms_bytes.size / 1000.0

    @property
    def period_bytes(self) -> float:
        return float(self._cum[-1])

    @property
    def mean_mbps(self) -> float:
        return self.period_bytes * 8 / 1e6 / self.duration_s

    def delivered(self, t_s: float) -> float:
        """Bytes the link could have delivered from time 0 to ``t_s`` (looping)."""
        t_ms = max(0.0, t_s * 1000.0)
        loops, rem = divmod(t_ms, self.ms_bytes.size)
        whole = int(rem)
        frac = rem - whole
        within = self._cum[whole] + (frac * self.ms_bytes[whole] if whole < self.ms_bytes.size else 0.0)
        return loops * self.period_bytes + within

    def capacity(self, start_s: float, end_s: float) -> float:
        return self.delivered(end_s) - self.delivered(start_s)

    def finish_time(self, start_s: float, nbytes: float) -> float:
        """When ``nbytes`` starting to leave at ``start_s`` have all been delivered (inf if never)."""
        if nbytes <= 0:
            return start_s
        if self.period_bytes <= 0:
            return math.inf
        target = self.delivered(start_s) + nbytes
        loops, rem = divmod(target, self.period_bytes)
        if rem == 0 and loops > 0:  # exactly at a period boundary: the end of the previous loop
            loops, rem = loops - 1, self.period_bytes
        index = int(np.searchsorted(self._cum, rem, side="left"))  # first cum >= rem
        index = max(1, index)
        ms = index - 1
        need = rem - self._cum[ms]
        frac = need / self.ms_bytes[ms] if self.ms_bytes[ms] > 0 else 1.0
        return (loops * self.ms_bytes.size + ms + frac) / 1000.0

    def windows_mbps(self, window_s: float = 1.0, seconds: float | None = None) -> np.ndarray:
        """Capacity averaged over consecutive windows (for plots and summaries)."""
        seconds = self.duration_s if seconds is None else seconds
        edges = np.arange(0.0, seconds + 1e-9, window_s)
        delivered = np.array([self.delivered(t) for t in edges])
        return np.diff(delivered) * 8 / 1e6 / window_s


def open_trace(spec: str, gilbert_elliott: str | None = None, seed: int = 0) -> Trace:
    """A trace file, or ``constant:MBPS[:SECONDS]``; optionally overlaid with Gilbert–Elliott outages.

    ``FILE@MBPS`` rescales a trace file to that mean (its shape kept).  ``gilbert_elliott`` is
    ``P_GOOD_TO_BAD:P_BAD_TO_GOOD[:BAD_FACTOR]`` per 100 ms step.
    """
    scale = None
    if not spec.startswith("constant:") and "@" in spec and not Path(spec).is_file():
        spec, _, text = spec.rpartition("@")
        try:
            scale = float(text)
        except ValueError:
            raise TraceError(f"{spec}@{text}: expected FILE@MBPS, a mean rate in Mbit/s") from None
    if spec.startswith("constant:"):
        parts = spec.split(":")[1:]
        try:
            mbps, seconds = float(parts[0]), float(parts[1]) if len(parts) > 1 else 600.0
        except (ValueError, IndexError):
            raise TraceError(f"{spec!r}: expected constant:MBPS[:SECONDS]") from None
        trace = Trace.constant(mbps, seconds)
    else:
        trace = Trace.load(spec)
        if scale is not None:
            trace = trace.scaled_to(scale)
    if gilbert_elliott:
        try:
            values = [float(v) for v in gilbert_elliott.split(":")]
            p_gb, p_bg = values[:2]
            bad = values[2] if len(values) > 2 else 0.0
        except ValueError:
            raise TraceError(f"{gilbert_elliott!r}: expected P_GOOD_TO_BAD:P_BAD_TO_GOOD[:BAD_FACTOR]") from None
        trace = trace.gilbert_elliott(p_gb, p_bg, bad, seed=seed)
    return trace


class Link:
    """A FIFO uplink over a trace plus a fixed one-way delay: what frames queued behind each other see."""

    def __init__(self, trace: Trace, one_way_delay_s: float = 0.0, start_s: float = 0.0) -> None:
        self.trace = trace
        self.delay_s = one_way_delay_s
        self.offset_s = start_s
        self.free_at = 0.0

    def send(self, t_s: float, nbytes: float) -> float:
        """Arrival time at the far end of ``nbytes`` handed to the link at ``t_s``."""
        begin = max(t_s, self.free_at)
        done = self.trace.finish_time(begin + self.offset_s, nbytes) - self.offset_s
        self.free_at = done
        return done + self.delay_s

    def peek(self, t_s: float, nbytes: float) -> float:
        """``send`` without committing: the arrival time if this payload were sent now."""
        begin = max(t_s, self.free_at)
        return self.trace.finish_time(begin + self.offset_s, nbytes) - self.offset_s + self.delay_s
