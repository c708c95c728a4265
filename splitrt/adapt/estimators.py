"""What the edge knows about the link, itself and the server, learnt from the frames it sends.

Every estimate is fed from quantities the edge measures anyway: payload
bytes, round-trip time, the server's reported decode/queue/tail time and the
head time.  No probe traffic.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

import psutil

from ..policy import LATE_ANSWER_S

MAX_DISCOUNT = 0.5
LOAD_REFERENCE_MS = 40.0  # a head this long (as profiled) counts as one full device-load sample
MIN_LOAD_SAMPLE_MS = 5.0  # a head shorter than this (as profiled) says nothing about the device's load
DOWN_AFTER = 3  # consecutive unanswered frames before the link counts as down ...
DOWN_SILENCE_S = 1.0  # ... and nothing answered (a frame, a late frame or a ping) for this long


class Ewma:
    def __init__(self, alpha: float, initial: float | None = None) -> None:
        self.alpha = alpha
        self.value = initial

    def update(self, sample: float, weight: float = 1.0) -> float:
        """``weight`` > 1 counts the sample as that many ordinary ones (byte weighting)."""
        if self.value is None:
            self.value = sample
        else:
            a = 1.0 - (1.0 - self.alpha) ** max(weight, 1e-6)
            self.value += a * (sample - self.value)
        return self.value


class BandwidthEstimator:
    """Uplink throughput from the stream itself, predicted robustly.

    A sample is payload bytes over the time they spent on the link: RTT minus
    the server's processing time minus the base (propagation) RTT, the lowest
    such value seen recently.  Transfers too short to time are counted at the
    shortest measurable time (a conservative sample, not a dropped one).
    The prediction is the smaller of the byte-weighted harmonic mean of the
    last samples and a fast and a slow EWMA, divided by
    one plus the recent relative prediction error (RobustMPC's discount, here
    the capped mean rather than the maximum), so a link that just surprised us
    is trusted less.
    """

    def __init__(
        self,
        window: int = 5,
        min_transfer_s: float = 0.002,
        initial_bps: float | None = None,
        base_window: int = 300,
    ) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=window)  # (bytes, seconds)
        self.errors: deque[float] = deque(maxlen=window)
        self.fast = Ewma(0.5)
        self.slow = Ewma(0.1)
        self.min_transfer_s = min_transfer_s
        self.initial_bps = initial_bps
        self.base_rtts: deque[float] = deque(maxlen=base_window)

    @property
    def base_rtt_s(self) -> float:
        return min(self.base_rtts) if self.base_rtts else 0.0

    def observe(self, nbytes: float, rtt_s: float, server_s: float) -> float | None:
        """One answered frame; returns the throughput sample in bit/s (or None if uninformative)."""
        network = max(0.0, rtt_s - server_s)
        self.base_rtts.append(network)
        transfer = network - self.base_rtt_s
        if nbytes <= 0:
            return None
        # Too fast to time: count it at the shortest time we can measure.  Dropping such samples
        # would keep only the slow ones and bias the estimate low.
        return self._add(nbytes, max(transfer, self.min_transfer_s))

    def _add(self, nbytes: float, seconds: float) -> float:
        sample = nbytes * 8 / seconds
        prediction = self.predict()
        if prediction is not None and prediction > 0:
            self.errors.append(abs(prediction - sample) / sample if sample > 0 else 1.0)
        self.samples.append((nbytes, seconds))
        weight = max(1.0, nbytes / 1500.0)
        self.fast.update(sample, weight)
        self.slow.update(sample, weight)
        return sample

    def restart(self, initial_bps: float | None) -> None:
        """Forget the samples (after an outage ends) and start again from ``initial_bps``."""
        self.samples.clear()
        self.errors.clear()
        self.fast, self.slow = Ewma(0.5), Ewma(0.1)
        self.initial_bps = initial_bps

    def throughput(self) -> float | None:
        """The byte-weighted harmonic mean of the recent samples, undiscounted (None: no samples)."""
        if not self.samples:
            return None
        return sum(b for b, _ in self.samples) * 8 / sum(s for _, s in self.samples)

    def predict(self) -> float | None:
        """Predicted bit/s for the next frame, or the initial guess (None: nothing known yet)."""
        harmonic = self.throughput()
        if harmonic is None:
            return self.initial_bps
        # RobustMPC divides by 1 + the largest recent error; frames here are one to a few packets,
        # whose timing is noisier than video chunks, so the mean error (capped) is used instead.
        # Taking the smaller of several estimators as well, as before, stacked a second discount
        # on the first: the estimate read 0.13-0.59 of the capacity.
        discount = 1.0 + min(MAX_DISCOUNT, sum(self.errors) / len(self.errors)) if self.errors else 1.0
        return harmonic / discount


class TransferTimes:
    """Recent transfer times with their payload sizes: the spread a mean bandwidth hides.

    On a cellular uplink a frame of one or two packets waits for the next
    delivery slot, so its transfer time is mostly that wait and varies far more
    than bytes / bandwidth suggests.  Keeping the samples themselves lets the
    controller ask how likely a payload is to get through in a given time.
    Frames never answered count as never arriving.  Old samples fade (their
    weight halves every ``memory_s``, and they go at 1/16): a device that ran
    locally for a while knows less about the link now, and must not keep
    judging it by a bad minute long past (it would never try the link again),
    nor forget at once what it learnt.
    """

    def __init__(self, window: int = 25, memory_s: float = 10.0) -> None:
        self.samples: deque[tuple[float, float, float]] = deque(maxlen=window)  # (bytes, seconds or inf, when)
        self.memory_s = memory_s

    def add(self, nbytes: float, seconds: float, at: float = 0.0) -> None:
        self.samples.append((nbytes, seconds, at))

    def lost(self, nbytes: float, at: float = 0.0) -> None:
        self.samples.append((nbytes, math.inf, at))

    def recent(self, now: float) -> tuple[tuple[float, float, float], ...]:
        """(bytes, seconds, weight): a sample's weight halves every ``memory_s``; below 1/16 it is gone."""
        out = []
        for n, t, at in self.samples:
            weight = 0.5 ** (max(0.0, now - at) / self.memory_s)
            if weight >= 1 / 16:
                out.append((n, t, weight))
        return tuple(out)


def p_within(
    samples: tuple[tuple[float, ...], ...],
    nbytes: float,
    budget_s: float,
    bandwidth_bps: float,
    floor_s: float = 0.002,
    down_bps: float | None = None,
) -> float:
    """How likely ``nbytes`` cross the link within ``budget_s``, judged from recent transfers.

    Each sample's time is moved by the size difference at the estimated bandwidth: a larger
    payload waits longer, a smaller one less, but never less than ``floor_s`` (the wait for
    a delivery slot does not shrink with the payload).  A larger payload is moved at the
    cautious (discounted) ``bandwidth_bps``, a smaller one at ``down_bps`` (the undiscounted
    throughput): on a swinging link an estimate made on small frames over-promised big ones,
    and the cautious rate under-promised small ones.  Not crediting smaller payloads, as
    before, judged every small configuration by the big ones' samples: under-confident, and
    biased toward sending more bytes.  Half an imagined success and half a failure are added
    (Jeffreys' prior) so that a few samples never give certainty either way; a whole one of
    each (Laplace) took six answers in a row to trust a link that never failed.
    """
    if budget_s <= 0:
        return 0.0
    shrink_bps = down_bps or bandwidth_bps
    hits = seen = 0.0
    for sample in samples:
        n, seconds = sample[0], sample[1]
        weight = sample[2] if len(sample) > 2 else 1.0
        if math.isinf(seconds) and n > nbytes:
            continue  # a larger payload lost says nothing sure about this one: censored, not a failure
        seen += weight
        if nbytes > n:
            seconds += (nbytes - n) * 8 / bandwidth_bps if bandwidth_bps > 0 else math.inf
        elif nbytes < n and shrink_bps > 0 and math.isfinite(seconds):
            seconds = max(floor_s, seconds - (n - nbytes) * 8 / shrink_bps)
        hits += weight * (seconds <= budget_s)
    return (hits + 0.5) / (seen + 1)


class LatencyEstimator:
    """Base round-trip latency (without transfer and server time) and its jitter."""

    def __init__(self, alpha: float = 0.2) -> None:
        self.mean = Ewma(alpha)
        self.jitter = Ewma(alpha, 0.0)

    def observe(self, base_rtt_s: float) -> None:
        if self.mean.value is not None:
            self.jitter.update(abs(base_rtt_s - self.mean.value))
        self.mean.update(base_rtt_s)

    @property
    def rtt_s(self) -> float:
        return self.mean.value or 0.0

    @property
    def jitter_s(self) -> float:
        return self.jitter.value or 0.0


class DeviceLoadEstimator:
    """How much slower the head runs than profiled: contention shows up here even when the OS looks idle.

    The estimate is the weighted median of the last ``window`` ratios (measured over profiled
    time).  A head's time varies from frame to frame by itself (its profiled spread, which the
    controller already counts); an average of the ratios, as before, followed that noise: a
    slow device's exit, profiled at about the deadline, looked in time on one frame and hopeless
    on the next, and the controller switched with it.  A median ignores single slow or quick
    runs and still follows real contention within half a window.
    """

    def __init__(self, window: int = 15, cpu_sampling: bool = True) -> None:
        self.ratios: deque[tuple[float, float]] = deque(maxlen=window)  # (ratio, weight)
        self.cpu_sampling = cpu_sampling
        if cpu_sampling:
            psutil.cpu_percent(None)  # prime the counter

    def observe(self, measured_ms: float, profiled_ms: float) -> float:
        """One head (or local model) run; short ones count less, their ratio is mostly timing noise.

        Runs profiled under ``MIN_LOAD_SAMPLE_MS`` do not count at all: the time of a JPEG encode
        profiled at a few milliseconds is mostly fixed costs and waits for the GIL.  On a live edge
        streaming only JPEG, such runs put the load at x8 while the device ran as profiled, every
        local model and hedge looked out of reach, and frames went unhedged (9-12 points of hits
        below the simulator)."""
        if profiled_ms >= MIN_LOAD_SAMPLE_MS and measured_ms > 0:
            weight = min(1.0, profiled_ms / LOAD_REFERENCE_MS)
            self.ratios.append((max(0.5, measured_ms / profiled_ms), weight))
        return self.value

    @property
    def value(self) -> float:
        if not self.ratios:
            return 1.0
        ordered = sorted(self.ratios)
        half, seen = sum(w for _, w in ordered) / 2, 0.0
        for ratio, weight in ordered:
            seen += weight
            if seen >= half:
                return ratio
        return ordered[-1][0]

    def cpu_percent(self) -> float | None:
        """The OS's view, a secondary signal recorded next to the head-time ratio."""
        return psutil.cpu_percent(None) if self.cpu_sampling else None


class ServerLoadEstimator:
    """Queue time the server reports: it grows when the server is shared or overloaded."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.queue = Ewma(alpha, 0.0)

    def observe(self, queue_s: float) -> None:
        self.queue.update(queue_s)

    @property
    def queue_s(self) -> float:
        return self.queue.value or 0.0


class InFlight:
    """Frames given up on whose bytes may still be ahead in the uplink's queue.

    A frame the edge stopped waiting for still crosses the link: its bytes delay every frame
    sent after it (the link is FIFO).  Without counting them, a controller that gave up on a
    large frame sent the next one into the same backlog, and judged it by transfer times
    measured on an empty link.  The queue is replayed at the link's long-run rate
    (``LinkEstimator._queue_rate``): each frame starts when it was sent or when the one before
    it has crossed, whichever is later.
    """

    MATCH_S = 0.05  # a settled frame is the pending one of its size sent this close to it

    def __init__(self, horizon_s: float = LATE_ANSWER_S) -> None:
        self.frames: list[tuple[float, float]] = []  # (sent at, bytes), in send order
        self.horizon_s = horizon_s  # the edge listens this long; after that a frame counts as lost

    def add(self, nbytes: float, sent_at: float) -> None:
        bisect.insort(self.frames, (sent_at, nbytes))

    def settle(self, nbytes: float, sent_at: float) -> None:
        """The frame sent at ``sent_at`` is answered or lost: it no longer waits on the link."""
        near = [f for f in self.frames if f[1] == nbytes and abs(f[0] - sent_at) <= self.MATCH_S]
        if near:
            self.frames.remove(min(near, key=lambda f: abs(f[0] - sent_at)))

    def forget_before(self, now: float) -> None:
        self.frames = [f for f in self.frames if now - f[0] <= self.horizon_s]

    def busy_until(self, at: float, rate_bps: float | None) -> float:
        """When the frames sent before ``at`` have crossed, at ``rate_bps`` (``at`` itself at the earliest)."""
        if not rate_bps or rate_bps <= 0:
            return at
        free = -math.inf
        for sent, nbytes in self.frames:
            if sent >= at:
                break
            free = max(free, sent) + nbytes * 8 / rate_bps
        return max(at, free)


@dataclass
class Estimates:
    """A snapshot the controller decides on (and the edge writes into each JSON line)."""

    bandwidth_bps: float | None
    rtt_s: float
    jitter_s: float
    device_load: float
    server_queue_s: float
    link_down: bool = False
    cpu_percent: float | None = None
    bandwidth_longterm_bps: float | None = None  # the slow EWMA: what the link carried over minutes
    transfers: tuple[tuple[float, ...], ...] = ()  # recent (bytes, transfer s[, weight]); inf: never answered
    #: The recent throughput without the error discount: what moves a sample to a smaller payload
    #: in ``p_within`` (the discounted rate made small payloads look slower than they are).
    throughput_bps: float | None = None
    #: How long until the bytes of frames given up on have left the uplink (a frame sent now waits).
    link_busy_s: float = 0.0

    def p_within(self, nbytes: float, budget_s: float) -> float | None:
        """How likely ``nbytes`` get through in ``budget_s``: 0 while the link is down, None before any transfer.

        A few samples give a cautious answer, not none: ``p_within`` adds half an
        imagined success and half a failure to what was seen."""
        if self.link_down or self.bandwidth_bps == 0:
            return 0.0
        if not self.transfers:
            return None
        return p_within(self.transfers, nbytes, budget_s, self.bandwidth_bps or 0.0, down_bps=self.throughput_bps)

    def as_dict(self) -> dict[str, float | bool | None]:
        return {
            "bandwidth_mbps": None if self.bandwidth_bps is None else round(self.bandwidth_bps / 1e6, 4),
            "rtt_ms": round(self.rtt_s * 1e3, 2),
            "jitter_ms": round(self.jitter_s * 1e3, 2),
            "device_load": round(self.device_load, 3),
            "server_queue_ms": round(self.server_queue_s * 1e3, 2),
            "link_down": self.link_down,
            "link_busy_ms": round(self.link_busy_s * 1e3, 1),
            "cpu_percent": self.cpu_percent,
        }


class LinkEstimator:
    """All estimators together, fed once per frame by the edge or the simulator."""

    def __init__(self, first_guess_bps: float = 1e6, cpu_sampling: bool = False) -> None:
        #: What a link that just answered a ping is assumed to carry until the first frame measures it.
        self.first_guess_bps = first_guess_bps
        self.bandwidth = BandwidthEstimator()
        self.latency = LatencyEstimator()
        self.device = DeviceLoadEstimator(cpu_sampling=cpu_sampling)
        self.server = ServerLoadEstimator()
        self.transfers = TransferTimes()
        self.in_flight = InFlight()
        #: The driver's clock (virtual in the simulator), set with ``tick`` before each frame.
        self.now = 0.0
        self.consecutive_timeouts = 0
        self.last_good_bps: float | None = None
        self.last_answer_at = -float("inf")
        self.restarted_at = -float("inf")  # when a probe last found the link back from an outage

    def answered(
        self, nbytes: float, rtt_s: float, server_s: float, queue_s: float = 0.0, sent_at: float | None = None
    ) -> None:
        """An answer, in time or ``late`` (the answer of a frame given up on: it still tells how the
        link carried the frame).  ``sent_at`` (the driver's clock): a late answer to a frame sent
        before the link came back from an outage measures the outage, which is over."""
        if sent_at is not None:
            self.in_flight.settle(nbytes, sent_at)
        if self._before_restart(sent_at):
            self.last_answer_at = self.now
            return
        # The time it waited behind frames given up on is the queue's, not this frame's: the
        # controller adds the queue of the moment to each prediction (``link_busy_s``).
        queued = self.in_flight.busy_until(sent_at, self._queue_rate()) - sent_at if sent_at is not None else 0.0
        rtt_s = max(rtt_s - queued, server_s + self.bandwidth.min_transfer_s)
        self.bandwidth.observe(nbytes, rtt_s, server_s)
        self.transfers.add(nbytes, max(0.0, rtt_s - server_s - self.bandwidth.base_rtt_s), self.now)
        self.latency.observe(self.bandwidth.base_rtt_s)
        self.server.observe(queue_s)
        self.consecutive_timeouts = 0
        self.last_answer_at = self.now

    def _queue_rate(self) -> float | None:
        """The rate a queue of whole frames drains at: the slow, byte-weighted average of the samples.
        The recent harmonic mean reads well under the capacity on a slotted cellular link (a frame
        of a packet or two mostly waits for its slot): replayed at it, a queue looked twice as long,
        and choices that held up under it (a hedged 14 kB JPEG on a 1.4 Mbit/s link) looked lost."""
        return self.bandwidth.slow.value or self.bandwidth.predict()

    def awaiting(self, nbytes: float, sent_at: float) -> None:
        """A frame given up on (or whose local result came first) is still listened for: until it is
        settled (``answered`` or ``lost`` with its ``sent_at``) its bytes may hold up later frames."""
        self.in_flight.add(nbytes, sent_at)

    def timed_out(self, nbytes: float, waited_s: float, server_s: float = 0.0, pending: bool = False) -> None:
        """No answer within ``waited_s`` (``server_s`` of which the server needs anyway).

        ``pending``: the edge still listens for the answer (a hedged frame), so the link
        is judged when it comes (``answered``) or does not (``lost``); only the
        run of unanswered frames (outage detection) counts now.  Judging it twice, as a loss
        now and as a slow sample later, biased both the bandwidth and ``p_in_time`` low.
        """
        link_s = waited_s - self.bandwidth.base_rtt_s - server_s
        if link_s < self.bandwidth.min_transfer_s:
            return  # given up on before the link could have carried it: says nothing yet
        if self.consecutive_timeouts == 0:
            self.last_good_bps = self.bandwidth.predict()
        self.consecutive_timeouts += 1
        if not pending:
            self._lost(nbytes, link_s)

    def lost(self, nbytes: float, waited_s: float, server_s: float = 0.0, sent_at: float | None = None) -> None:
        """A frame whose answer never came (while the edge listened for ``waited_s``)."""
        if sent_at is not None:
            self.in_flight.settle(nbytes, sent_at)
        if self._before_restart(sent_at):
            return  # lost in the outage, already counted as one: the link after it is judged afresh
        link_s = waited_s - self.bandwidth.base_rtt_s - server_s
        if link_s >= self.bandwidth.min_transfer_s:
            self._lost(nbytes, link_s)

    def _lost(self, nbytes: float, link_s: float) -> None:
        # A loss is not a throughput sample: "under nbytes in link_s" is a bound that, averaged in as
        # one, dragged the estimate to a few percent of the capacity.  Losses count where they mean
        # something: in the chance of arriving in time (``transfers``) and in outage detection.
        self.transfers.lost(nbytes, self.now)

    def _before_restart(self, sent_at: float | None) -> bool:
        return sent_at is not None and sent_at < self.restarted_at

    @property
    def link_down(self) -> bool:
        """Several frames in a row unanswered, and a while without any answer: one late frame on a slow
        link is not an outage, and neither are a few whose late answers are on their way (on a
        cellular uplink three frames in a row often miss a deadline and arrive 100 ms later;
        calling that an outage made the edge leave a link that carried 85% of frames in time)."""
        return self.consecutive_timeouts >= DOWN_AFTER and self.now - self.last_answer_at >= DOWN_SILENCE_S

    def probe_answered(self, rtt_s: float) -> None:
        """A probe got through: the link is up.  After an outage, start again from a modest guess.

        Its round trip counts towards the base RTT like any frame's (the minimum over recent
        ones), so one ping that waited for a sparse delivery slot does not inflate it.  It is
        not a bandwidth sample: tried in the simulator, padded probes made the controller
        chase every short good spell (more switches, more late frames).
        """
        if self.link_down or self.bandwidth.predict() is None:
            # No more than the first guess: the link that just came back may not be the one that left.
            self.bandwidth.restart(min(self.last_good_bps or self.first_guess_bps, self.first_guess_bps))
            self.transfers.samples.clear()
            self.consecutive_timeouts = 0
            self.restarted_at = self.now
        # A frame or two late is a slow link, not an outage: a ping that gets through then says
        # nothing new, and forgetting what the frames measured (as before) left one lost frame
        # to judge the link by (p ~ 0.25): the edge left a link that carried 85% of frames in time.
        self.last_answer_at = self.now
        self.bandwidth.base_rtts.append(rtt_s)
        self.latency.observe(self.bandwidth.base_rtt_s)

    def head_time(self, measured_ms: float, profiled_ms: float) -> None:
        self.device.observe(measured_ms, profiled_ms)

    def tick(self, now: float) -> None:
        self.now = now
        self.in_flight.forget_before(now)

    def snapshot(self) -> Estimates:
        return Estimates(
            bandwidth_bps=self.bandwidth.predict(),
            rtt_s=self.latency.rtt_s,
            jitter_s=self.latency.jitter_s,
            device_load=self.device.value,
            server_queue_s=self.server.queue_s,
            link_down=self.link_down,
            cpu_percent=self.device.cpu_percent(),
            bandwidth_longterm_bps=self.bandwidth.slow.value,
            transfers=self.transfers.recent(self.now),
            throughput_bps=self.bandwidth.throughput(),
            link_busy_s=self.in_flight.busy_until(self.now, self._queue_rate()) - self.now,
        )
