"""Per-frame choice of configuration (split point, codec, width, or local) from the current estimates.

Predicted latency of a configuration = head time x device load + bytes /
bandwidth + base RTT + jitter + server time (tail + reported queue).  The
default objective picks the configuration with the highest expected mAP *in
time*: P(answer by the deadline) x its mAP + (1 - P) x what is delivered
otherwise (a hedge's or a fallback's local result, or nothing); the other
one picks the fastest configuration above an accuracy floor.  When nothing
is expected to make the deadline the frame is skipped (reported, never
silent): running the fastest configuration anyway would deliver nothing in
time and make every later frame later (the queueing death spiral).  Before
the link is measured (cold start) a prior bandwidth stands in for the
estimate and an untried remote configuration counts as a coin flip.

Hedging: when the device can still run a local model after a remote
configuration's head and finish by the deadline, the edge starts that local
model as soon as the frame is sent and keeps whichever result is ready in
time, the server's first (an early exit on the tensor the head has just
computed costs only its own layers).  Such a frame cannot miss its deadline, so the
controller does not need to predict the link: it scores a hedged
configuration by its expected accuracy, P(answer in time) x its mAP +
(1 - P) x the local model's, with P taken from the recent transfer times
(``Estimates.p_within``).  An unhedged remote configuration must fit with
the safety margin and be likely to arrive.

A local model that finishes in time only some of the time (a slow device
whose exit takes about the deadline) is still a hedge worth running: its
chance of finishing in time is taken from its lognormal device time.  When
it is the more accurate of the two (a cheap JPEG offload hedged with an exit
that usually just misses), the roles swap: the edge waits for the local
result until the deadline and delivers the server's answer, already in
hand, only if the local model does not finish in time.

Hysteresis: leaving a choice that can no longer meet the deadline is
immediate; any other change waits until the new choice has looked better
for a while, longer when it means changing split point than when only the
width changes (a split change also moves work between device and server).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .calibration import OnlineCalibration
from .estimators import Estimates, p_within
from .profile import ConfigProfile, Profile, log_spread

OBJECTIVES = ("accuracy", "latency")
STABLE_MARGIN = 0.05  # head, base RTT and server times vary little once measured
MAX_EXPLORE_WAIT_S = 60.0
UNKNOWN_P = 0.5  # a hedged frame on a link not yet measured: a coin flip, and worth the try
SOFT_HEDGE_P = 0.2  # a local model done in time less often than this is no hedge: it only keeps the device busy
MIN_GAIN = 0.25  # mAP a hedged remote frame must be expected to add over its local model to be worth sending
#: Three-point Gauss-Hermite nodes for a standard normal: (weight, z).
HEAD_QUADRATURE = ((1 / 6, -math.sqrt(3.0)), (2 / 3, 0.0), (1 / 6, math.sqrt(3.0)))
RTT_PROBE_EVERY_S = 5.0  # base-RTT pings while frames go over the link
SAFE_LOCAL_P = 0.95  # a local model done in time this often is a safe place to step down to
SAFE_MOVE_GAIN = 1.0  # mAP a safe move must add to happen at once (less waits, as any move: no flapping)
EXPLORE_FRAMES = 5  # frames an exploration sends in a row, so that what they measure can decide
EXPLORE_MIN_SHARE = 0.2  # a try of the link waits at least this share of the back-off (`explore_share`)
STICKY_REMOTE_S = 10.0  # a stay on the link this long resets the exploration back-off
PRIOR_BPS = 1e6  # the link before anything crossed it: a modest cellular uplink
BUSY_POINTS = 4  # instants the expected wait for an answer is integrated over
STALE_SHARE = 0.98  # a frame that waited this share of the frame interval has a newer one behind it
#: Frames the catch-up check looks ahead: a backlog left by a frame that holds the edge about one
#: interval lasts for many frames, and one frame of lookahead saw only the first of them.
CATCH_UP_FRAMES = 5
#: Skipping a late frame must be worth this much more than running it (both sides are estimates).
CATCH_UP_GAIN = 1.1
PRIOR_RTT_S = 0.05  # a cellular base round trip, for long shots when every recent one waited in a queue


@dataclass
class Decision:
    config: ConfigProfile | None  # None: skip the frame (nothing can make its deadline)
    predicted_ms: float
    reason: str
    #: Hedged: the local configuration the device runs while the frame is out (None: not hedged).
    fallback: ConfigProfile | None = None
    p_in_time: float | None = None  # the controller's estimate that the answer comes in time
    #: Unhedged: the local configuration to run if the answer has not come by the last moment it fits.
    late_fallback: ConfigProfile | None = None
    expected_map: float | None = None  # the expected mAP in time behind the choice
    #: Hedged, or a long shot: how long after capture to wait for the answer at most (None: the
    #: deadline).  With frames due faster than the deadline, waiting longer than the frame interval
    #: for a better answer would start every later frame late.
    patience_ms: float | None = None
    #: ``p_in_time`` before the recalibration: what the driver reports back with the outcome.
    p_raw: float | None = None

    @property
    def name(self) -> str:
        return "skip" if self.config is None else self.config.name

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "config": self.name,
            "predicted_ms": round(self.predicted_ms, 2),
            "reason": self.reason,
        }
        if self.fallback is not None:
            out["hedge"] = self.fallback.name
        if self.late_fallback is not None:
            out["late_fallback"] = self.late_fallback.name
        if self.p_in_time is not None:
            out["p_in_time"] = round(self.p_in_time, 3)
        if self.p_raw is not None:
            out["p_raw"] = round(self.p_raw, 3)
        if self.expected_map is not None:
            out["expected_map"] = round(self.expected_map, 2)
        if self.patience_ms is not None:
            out["patience_ms"] = round(self.patience_ms, 1)
        return out


def best_hedge(
    profile: Profile,
    entry: ConfigProfile,
    budget_ms: float,
    device_load: float,
    interval_ms: float | None = None,
    answer_ms: float = math.inf,
) -> ConfigProfile | None:
    """The local configuration to run after ``entry``'s head: the most mAP expected within ``budget_ms``.

    One that fits even when the device is slow counts in full; one that fits only some of
    the time counts by its chance of finishing in time, and not at all below ``SOFT_HEDGE_P``.
    With the frame ``interval_ms`` known, one that keeps the edge busy for longer than that
    counts by the share of frames the edge keeps up with (``sustained``); it is stopped when
    the answer comes (expected at ``answer_ms``) unless it is the more accurate result."""
    if not entry.config.remote:
        return None

    def value(hedge: ConfigProfile) -> float:
        done = (entry.head_ms + hedge.device_ms_after(entry)) * device_load
        busy = done if prefers_local(entry, hedge) else min(done, answer_ms)
        return hedge_in_time(entry, hedge, budget_ms, device_load) * hedge.map * sustained(busy, interval_ms)

    scored = [(value(c), c) for c in profile.local_configs()]
    scored = [(value, c) for value, c in scored if value > 0]
    return max(scored, key=lambda vc: vc[0])[1] if scored else None


def hedge_in_time(entry: ConfigProfile, hedge: ConfigProfile, budget_ms: float, device_load: float) -> float:
    """How likely ``hedge``, run right after ``entry``'s head, is done within ``budget_ms`` (0 below
    ``SOFT_HEDGE_P``; 1 when it fits at the slow end of both device times)."""
    head, after = entry.head_ms * device_load, hedge.device_ms_after(entry) * device_load
    if slow_ms(entry, head) + slow_ms(hedge, after) <= budget_ms:
        return 1.0
    p = hedge_p_within(entry, hedge, budget_ms, device_load)
    return p if p >= SOFT_HEDGE_P else 0.0


def hedge_p_within(entry: ConfigProfile, hedge: ConfigProfile, budget_ms: float, device_load: float) -> float:
    """The chance itself (lognormal device times) that ``hedge``, run after ``entry``'s head, is done in time."""
    median = (entry.head_ms + hedge.device_ms_after(entry)) * device_load
    return p_device_within(median, max(log_spread(entry), log_spread(hedge)), budget_ms)


def sustained(busy_ms: float, interval_ms: float | None) -> float:
    """The share of frames an edge keeps up with when each keeps it busy ``busy_ms`` and frames come
    every ``interval_ms``: 1 when it keeps up, else interval / busy.

    The edge handles one frame at a time, so a frame that holds it longer than the interval
    delays every later one; run on every frame, such a choice falls behind until frames are
    skipped or miss.  Scored per frame without this, a local model at 1.5x the interval looked
    best whenever the deadline allowed it, and dragged the frames after it past theirs."""
    if interval_ms is None or interval_ms <= 0 or busy_ms <= interval_ms:
        return 1.0
    return interval_ms / busy_ms


def explore_share(here: float, link_map: float) -> float:
    """The share of the exploration back-off to wait before trying the link again, from what a try costs
    against what it could win (mAP per frame).

    A try is a frame sent over a link last seen bad (a coin flip, ``UNKNOWN_P``) instead of what
    the device delivers (``here``); it wins ``link_map`` a frame from then on if the link is back.
    A try that costs as much as it could win waits the whole back-off (a Pi's local model within
    a few mAP of the link); one that costs nothing waits ``EXPLORE_MIN_SHARE`` of it (an exit in
    time on a third of its frames, or skipping): waiting out the whole back-off there lost most
    of those seconds' frames."""
    cost = here - UNKNOWN_P * link_map
    gain = link_map - here
    if gain <= 0:
        return 1.0
    return min(1.0, max(EXPLORE_MIN_SHARE, cost / gain))


def p_device_within(median_ms: float, sigma: float, budget_ms: float) -> float:
    """P(a lognormal device time with this median and sigma is at most ``budget_ms``)."""
    if median_ms <= 0:
        return 1.0
    if budget_ms <= 0:
        return 0.0
    if sigma <= 0:
        return 1.0 if median_ms * (1.0 + STABLE_MARGIN) <= budget_ms else 0.0
    return 0.5 * (1.0 + math.erf(math.log(budget_ms / median_ms) / (sigma * math.sqrt(2.0))))


def prefers_local(entry: ConfigProfile, hedge: ConfigProfile) -> bool:
    """A hedged frame whose local model is the more accurate result: the edge waits for it until the
    deadline and keeps the server's answer as the safety net (``Simulator.play`` and the live edge's
    ``detect_hedged`` both follow this rule); otherwise the answer is waited for, the local result
    the safety net."""
    return hedge.map > entry.map


def hedged_value(entry: ConfigProfile, hedge: ConfigProfile, p_remote: float, p_local: float) -> tuple[float, float]:
    """(expected mAP in time, what the link adds over the local model alone) of a hedged frame.

    The more accurate result is preferred when both come in time (``Simulator.play`` and
    ``detect_hedged`` follow the same rule)."""
    if prefers_local(entry, hedge):
        added = (1.0 - p_local) * p_remote * entry.map
        return p_local * hedge.map + added, added
    value = p_remote * entry.map + (1.0 - p_remote) * p_local * hedge.map
    return value, value - p_local * hedge.map


def queued_ms(est: Estimates, head_ms: float) -> float:
    """How long a frame sent after a ``head_ms`` head waits behind the bytes of frames given up on."""
    return max(0.0, est.link_busy_s * 1e3 - head_ms)


def slow_ms(entry: ConfigProfile, median_ms: float) -> float:
    """A device time at its slow end: the profile's p95 ratio applied (at least the stable margin).

    A safety net has to hold when the device is slow too: a hedge that fits only at the median
    time missed the deadline on one frame in six."""
    ratio = max(1.0 + STABLE_MARGIN, entry.head_p95_ms / entry.head_ms if entry.head_ms > 0 else 1.0)
    return median_ms * ratio


class StaticController:
    """Always the same configuration (the baselines every experiment compares against).

    ``hedge``: a remote configuration is hedged with the most accurate local model that fits
    after its head, as the adaptive controller does (a fixed choice plus a safety net).
    """

    def __init__(self, profile: Profile, name: str, deadline_ms: float | None = None, hedge: bool = False) -> None:
        if hedge and deadline_ms is None:
            raise ValueError("a hedged static policy needs the deadline (to know which local model fits)")
        self.profile = profile
        self.config = profile[name]
        self.deadline_ms = deadline_ms
        self.hedge = hedge

    def decide(self, now_s: float, estimates: Estimates, waited_ms: float = 0.0) -> Decision:
        fallback = None
        if self.hedge and self.deadline_ms is not None:
            fallback = best_hedge(self.profile, self.config, self.deadline_ms - waited_ms, estimates.device_load)
        return Decision(self.config, math.nan, "static (hedged)" if fallback else "static", fallback)

    def probe_due(self, now_s: float) -> bool:
        return False

    def outcome(self, predicted: float, in_time: bool) -> None:
        """A fixed choice learns nothing from how its frames fared."""


class AdaptiveController:
    def __init__(
        self,
        profile: Profile,
        deadline_ms: float,
        objective: str = "accuracy",
        accuracy_floor: float | None = None,
        margin: float = 0.5,
        up_after_s: float = 2.0,
        split_up_after_s: float = 5.0,
        probe_every_s: float = 1.0,
        explore_after_s: float = 10.0,
        hedge: bool = True,
        prior_bps: float = PRIOR_BPS,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
        if objective == "latency" and accuracy_floor is None:
            raise ValueError("the latency objective needs an accuracy floor (mAP)")
        if deadline_ms <= 0:
            raise ValueError("the deadline must be positive")
        self.profile = profile
        self.deadline_ms = deadline_ms
        self._waited_ms = 0.0  # how long the frame being decided has already waited for the device
        self.objective = objective
        self.accuracy_floor = accuracy_floor
        self.margin = margin
        self.hedge = hedge
        self.up_after_s = up_after_s
        self.split_up_after_s = split_up_after_s
        self.probe_every_s = probe_every_s
        self.current: ConfigProfile | None = None
        self._better_since: float | None = None  # since when something better than current looks feasible
        self._last_probe = -math.inf  # nothing is known at start: the first frame probes the link
        self.explore_after_s = explore_after_s
        self._explore_wait = explore_after_s
        self._local_since = 0.0
        self._remote_since = 0.0
        self.prior_bps = prior_bps
        self.skipping = False  # the last frame was skipped: probe the link as when running locally
        self._explore_left = 0
        self._last_capture: float | None = None
        self._interval_s: float | None = None
        self.calibration = OnlineCalibration()
        #: Scores and hedges already worked out for the decision under way (None between decisions).
        self._memo: dict[tuple, tuple[Estimates, Any]] | None = None

    # -- prediction ------------------------------------------------------------------------
    def predict_ms(self, entry: ConfigProfile, est: Estimates) -> float:
        return sum(self._parts_ms(entry, est))

    def _bandwidth(self, est: Estimates) -> float | None:
        """The estimate, or the prior before anything crossed the link (0/None: nothing goes out)."""
        if est.link_down or est.bandwidth_bps == 0:
            return None
        if not est.transfers or est.bandwidth_bps is None:  # nothing crossed the link lately
            return self.prior_bps
        return est.bandwidth_bps

    def _parts_ms(self, entry: ConfigProfile, est: Estimates) -> tuple[float, float]:
        """(measured-stable part, transfer part): head, base RTT, jitter and server time vs bytes / bandwidth."""
        device = entry.head_ms * est.device_load
        if not entry.config.remote:
            return device, 0.0
        network = (est.rtt_s + est.jitter_s) * 1e3
        server = entry.tail_ms + est.server_queue_s * 1e3
        bandwidth = self._bandwidth(est)
        if not bandwidth or bandwidth <= 0:
            return device + network + server, math.inf  # nothing goes out until a probe says the link is back
        return device + network + server, queued_ms(est, device) + entry.bytes_p95 * 8 / bandwidth * 1e3

    @property
    def budget_ms(self) -> float:
        return self.deadline_ms - self._waited_ms

    def _fits(self, entry: ConfigProfile, est: Estimates, budget_ms: float | None = None) -> bool:
        """The prediction with a safety margin: small on what is measured and stable, larger on the transfer."""
        stable, transfer = self._parts_ms(entry, est)
        budget = self.budget_ms if budget_ms is None else budget_ms
        return stable * (1.0 + STABLE_MARGIN) + transfer * (1.0 + self.margin) <= budget

    def hedge_for(self, entry: ConfigProfile, est: Estimates) -> ConfigProfile | None:
        """The local configuration to run after ``entry``'s head: the one whose hedged frame scores best.

        Judged by the whole frame (the answer's chance, the local result when it misses, how long
        the edge is held), not by the local model alone (`best_hedge`, the static baselines' rule):
        alone, the slowest and most accurate model that fits the deadline wins, and with a deadline
        three frame intervals long that was a model slower than the interval, within MIN_GAIN of the
        split itself, so the split was not worth sending and a JPEG went out instead (1.4 mAP lost).
        """
        return self._hedge_choice(entry, est)[0]

    def _hedge_choice(self, entry: ConfigProfile, est: Estimates) -> tuple[ConfigProfile | None, float | None]:
        """(``hedge_for``'s choice, the score of a frame hedged with it: None if the link adds too little)."""
        if not self.hedge or not entry.config.remote:
            return None, None
        return self._memoized("hedge", entry, est, lambda: self._pick_hedge(entry, est))

    def _pick_hedge(self, entry: ConfigProfile, est: Estimates) -> tuple[ConfigProfile | None, float | None]:
        default = best_hedge(
            self.profile, entry, self.budget_ms, est.device_load, self._interval_ms(), self.predict_ms(entry, est)
        )
        if default is None:
            return None, None
        best, best_score = default, self._scored_with(entry, default, est)
        for local in self.profile.local_configs():
            if local.name == default.name or hedge_in_time(entry, local, self.budget_ms, est.device_load) <= 0:
                continue
            score = self._scored_with(entry, local, est)
            if score is not None and (best_score is None or score > best_score):
                best, best_score = local, score
        return best, best_score

    def _memoized(self, kind: object, entry: ConfigProfile, est: Estimates, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per decision for the same configuration, estimates and wait.

        One decision scores every configuration several times over (the best, the current one, the
        hysteresis, the catch-up lookahead), and each hedged score tries every local model as the
        hedge: without this a decision took ten times as long, time the device does not have."""
        memo = self._memo
        if memo is None:
            return compute()
        key = (kind, entry.name, self._waited_ms, self._interval_s)
        hit = memo.get(key)
        if hit is not None and hit[0] is est:  # the very same estimates, kept alive by the memo
            return hit[1]
        value = compute()
        memo[key] = (est, value)
        return value

    def _scored_with(self, entry: ConfigProfile, hedge: ConfigProfile, est: Estimates) -> float | None:
        """The score of a frame run with ``entry`` hedged with ``hedge`` (None: the link adds too little)."""
        score = self._hedged_score(entry, hedge, est)
        if score is None:
            return None
        return score * sustained(self._busy_ms(entry, hedge, None, est), self._interval_ms())

    def late_fallback_for(self, entry: ConfigProfile, est: Estimates) -> ConfigProfile | None:
        """Unhedged: the fastest local configuration that still fits after the head (the longest wait)."""
        if not entry.config.remote:
            return None
        head = slow_ms(entry, entry.head_ms * est.device_load)
        fits = [
            c for c in self.profile.local_configs() if head + slow_ms(c, c.head_ms * est.device_load) <= self.budget_ms
        ]
        return min(fits, key=lambda c: c.head_ms) if fits else None

    def p_in_time(self, entry: ConfigProfile, est: Estimates, budget_ms: float | None = None) -> float | None:
        """How likely ``entry``'s answer comes within ``budget_ms`` (default: in time), from the recent
        transfer times and recalibrated by how such predictions fared (None: no transfers lately)."""
        raw = self.p_in_time_raw(entry, est, budget_ms)
        return None if raw is None else self.calibration.correct(raw)

    def p_in_time_raw(self, entry: ConfigProfile, est: Estimates, budget_ms: float | None = None) -> float | None:
        """``p_in_time`` before the recalibration."""
        budget = self.budget_ms if budget_ms is None else budget_ms
        return self._memoized(("p", budget), entry, est, lambda: self._p_raw(entry, est, budget))

    def _p_raw(self, entry: ConfigProfile, est: Estimates, budget: float) -> float | None:
        stable, transfer = self._parts_ms(entry, est)
        if not math.isfinite(transfer):
            return 0.0
        # A probability, not a safety check: no margin, and no jitter on top of the transfer samples,
        # which already hold the spread of the network time (each is the round trip less the least
        # one).  Both made it under-confident (0.45 predicted, 0.63 observed at a 100 ms deadline).
        stable -= est.jitter_s * 1e3
        head = entry.head_ms * est.device_load
        sigma = log_spread(entry)
        # The head time varies (lognormal, the profile's p95): average the link's chance over three
        # head times (Gauss-Hermite), so a configuration whose median just misses keeps its real chance.
        total = 0.0
        for weight, z in HEAD_QUADRATURE:
            drawn = head * math.exp(sigma * z)
            left = budget - (stable - head + drawn) - queued_ms(est, drawn)
            if left > 0:
                p = est.p_within(entry.bytes_mean, left / 1e3)
                if p is None:
                    return None
                total += weight * p
        return total

    def outcome(self, predicted: float, in_time: bool) -> None:
        """How a remote frame fared against its ``p_in_time`` (once the edge knows: answered, or the
        deadline passed): feeds the recalibration of later predictions."""
        self.calibration.observe(predicted, in_time)

    def _p_local(self, entry: ConfigProfile, est: Estimates) -> float:
        """How likely a local configuration finishes within the budget: its device time is taken as
        lognormal with the profile's median and p95 (what the simulator draws)."""
        return p_device_within(entry.head_ms * est.device_load, log_spread(entry), self.budget_ms)

    def _p(self, entry: ConfigProfile, est: Estimates, budget_ms: float | None = None) -> float:
        """``p_in_time``, or before anything is known a guess: a coin flip if the prior link fits, half that
        if only the head, RTT and server time do (then it is the frame's only chance), else no chance."""
        budget = self.budget_ms if budget_ms is None else budget_ms
        p = self.p_in_time(entry, est, budget)
        if p is not None:
            return p
        if self._fits(entry, est, budget):
            return UNKNOWN_P
        stable, transfer = self._parts_ms(entry, est)
        return UNKNOWN_P / 2 if math.isfinite(transfer) and stable * (1.0 + STABLE_MARGIN) < budget else 0.0

    def _score(self, entry: ConfigProfile, est: Estimates) -> float | None:
        """Expected mAP in time of a frame run with ``entry`` (None: not worth running), times the share
        of frames the edge keeps up with when each takes as long (``sustained``)."""
        return self._memoized("score", entry, est, lambda: self._scored(entry, est))

    def _scored(self, entry: ConfigProfile, est: Estimates) -> float | None:
        hedge = late = None
        if not entry.config.remote:
            score: float | None = entry.map * self._p_local(entry, est)
        else:
            hedge, score = self._hedge_choice(entry, est)
            if hedge is None:
                score, late = self._unhedged(entry, est)
        if score is None:
            return None
        if hedge is None:  # a hedged frame's score already counts how long it holds the edge
            score *= sustained(self._busy_ms(entry, None, late, est), self._interval_ms())
        return score if score >= MIN_GAIN else None

    def _hedged_score(self, entry: ConfigProfile, hedge: ConfigProfile, est: Estimates) -> float | None:
        """Expected mAP in time of one hedged frame (None: the link adds too little to its local model)."""
        p = self._p(entry, est)
        if self.p_in_time(entry, est) is None:
            p = UNKNOWN_P  # the local model covers it: worth finding out
        elif not prefers_local(entry, hedge) and self._patience_ms() is not None:
            # The answer is waited for one frame interval at most (``_decision``): only what comes
            # by then counts.  Judged by the deadline instead, a split whose answer needs a little
            # more than the interval looked worth sending, and delivered its hedge every time.
            p = self._p(entry, est, self._answer_wait_ms())
        p_local = hedge_in_time(entry, hedge, self.budget_ms, est.device_load)
        if prefers_local(entry, hedge):
            # The link adds what the local model misses: taken as certain because it fits at the slow
            # end, a local model late on 1.5% of frames made its remote safety net look worth nothing.
            p_local = min(p_local, hedge_p_within(entry, hedge, self.budget_ms, est.device_load))
        value, added = hedged_value(entry, hedge, p, p_local)
        # The local model alone scores about as much for less: the link must add something.
        return value if added >= MIN_GAIN else None

    def _busy_ms(
        self, entry: ConfigProfile, hedge: ConfigProfile | None, late: ConfigProfile | None, est: Estimates
    ) -> float:
        """How long a frame run with ``entry`` (hedged with ``hedge``, or with the late fallback ``late``)
        is expected to hold the edge, from its start to its delivery: the next frame cannot start before."""
        head = entry.head_ms * est.device_load
        if not entry.config.remote:
            return head
        if hedge is not None:
            local_done = head + hedge.device_ms_after(entry) * est.device_load
            if prefers_local(entry, hedge):
                return local_done
            # Delivered when the answer comes, else with the local result once the wait is over.
            return self._expected_wait_ms(entry, est, max(local_done, self._answer_wait_ms()))
        if late is None:
            return self._expected_wait_ms(entry, est, self.budget_ms)
        late_ms = late.head_ms * est.device_load * (1.0 + STABLE_MARGIN)
        wait = self.budget_ms - late_ms
        p = self._p(entry, est, wait)
        return self._expected_wait_ms(entry, est, wait) + (1.0 - p) * late_ms

    def _expected_wait_ms(self, entry: ConfigProfile, est: Estimates, wait_ms: float) -> float:
        """E[min(answer time, ``wait_ms``)] from the chance of an answer by each instant (trapezoids).

        From the same transfer samples as ``p_in_time``, not from the bandwidth estimate: that
        one is cautious by design (p95 bytes, discounted rate) and made a frame answered in 200 ms
        look as if it held the edge for 500."""
        if wait_ms <= 0:
            return 0.0
        stable, _ = self._parts_ms(entry, est)
        begin = min(max(0.0, stable - est.jitter_s * 1e3), wait_ms)
        points = [begin + (wait_ms - begin) * i / BUSY_POINTS for i in range(BUSY_POINTS + 1)]
        chances = [self.p_in_time(entry, est, t) if t > 0 else 0.0 for t in points]
        if chances[-1] is None:  # nothing measured lately: the prediction
            return min(self.predict_ms(entry, est), wait_ms)
        late = [1.0 - (p or 0.0) for p in chances]
        step = (wait_ms - begin) / BUSY_POINTS
        return begin + sum((a + b) / 2 * step for a, b in zip(late, late[1:]))

    def _unhedged(self, entry: ConfigProfile, est: Estimates) -> tuple[float, ConfigProfile | None]:
        """Expected mAP in time of an unhedged frame, and its late fallback (None: wait until the deadline).

        A fallback has to start early enough to finish in time, so it cuts the wait for the answer
        short; it is only worth it when the answers that come in that shorter wait, plus the local
        result for the rest, beat waiting the whole budget for the answer alone."""
        alone = self._p(entry, est) * entry.map
        fallback = self.late_fallback_for(entry, est)
        if fallback is None:
            return alone, None
        wait_ms = self.budget_ms - fallback.head_ms * est.device_load * (1.0 + STABLE_MARGIN)
        p = self._p(entry, est, wait_ms)
        covered = p * entry.map + (1.0 - p) * fallback.map
        return (covered, fallback) if covered > alone else (alone, None)

    def _best(self, est: Estimates) -> tuple[ConfigProfile | None, float, str]:
        predictions = {c.name: self.predict_ms(c, est) for c in self.profile.configs}
        if self.objective == "accuracy":
            scores = {c.name: self._score(c, est) for c in self.profile.configs}
            feasible = [c for c in self.profile.configs if scores[c.name] is not None]
            if feasible:
                best = max(feasible, key=lambda c: (round(scores[c.name], 1), -predictions[c.name]))
                hedged = " (hedged)" if self.hedge_for(best, est) is not None else ""
                return best, predictions[best.name], f"best expected mAP in time{hedged}"
        else:
            floor = self.accuracy_floor or 0.0
            good = [c for c in self.profile.configs if c.map >= floor]
            if good:
                best = min(good, key=lambda c: predictions[c.name])
                if self._fits(best, est):
                    return best, predictions[best.name], f"fastest with mAP >= {floor:g}"
            fitting = [c for c in self.profile.configs if self._fits(c, est)]
            if fitting:
                best = max(fitting, key=lambda c: c.map)
                return best, predictions[best.name], f"nothing with mAP >= {floor:g} fits: best that does"
        shot = self._long_shot(est)
        if shot is not None:
            return shot, predictions[shot.name], "long shot: nothing else can deliver in time"
        return None, math.nan, "skip: no configuration is expected to make the deadline"

    @staticmethod
    def _hopeful(est: Estimates) -> Estimates:
        """The estimates with the base RTT at most the prior: for long shots and explorations.

        The base RTT is the least network time seen lately; after a start in an outage, or a
        backlog of late answers, every recent one waited in the link's queue, and taking that
        as the fixed cost of every frame ruled the link out for good (nothing tried, nothing
        learnt)."""
        return replace(est, link_down=False, rtt_s=min(est.rtt_s, PRIOR_RTT_S), jitter_s=0.0)

    def _long_shot(self, est: Estimates) -> ConfigProfile | None:
        """When nothing is expected to make it, the remote configuration most likely to still do.

        Skipping delivers nothing for certain; an unhedged frame whose head and server time fit
        delivers with whatever chance the recent transfers give it, even on a link that looks
        down (its own samples, lost ones included, decide).  Without this a device with no
        local model fast enough skipped every frame after three losses in a row.
        """
        best, best_value = None, MIN_GAIN
        est = self._hopeful(est)
        for entry in self.profile.configs:
            if not entry.config.remote:
                continue
            stable, _ = self._parts_ms(entry, est)
            # The head at a fast draw (one sigma quick): a long shot may count on a quick head, times
            # the chance of one.
            head = entry.head_ms * est.device_load
            quick = head * math.exp(-log_spread(entry))
            wait_ms = self.budget_ms
            if self._long_shot_patience_ms() is not None:  # until the next frame is due (``_decision``)
                wait_ms = min(wait_ms, self._long_shot_patience_ms() - self._waited_ms)
            budget_ms = wait_ms - (stable - head + quick) * (1.0 + STABLE_MARGIN) - queued_ms(est, quick)
            if budget_ms <= 0:
                continue
            if est.transfers:
                p = p_within(est.transfers, entry.bytes_mean, budget_ms / 1e3, self._bandwidth(est) or 0.0)
            else:
                p = UNKNOWN_P / 2
            if quick < head:  # the chance the head is at least that quick
                p *= 0.16 if stable * (1.0 + STABLE_MARGIN) > self.budget_ms else 1.0
            if p * entry.map > best_value:
                best, best_value = entry, p * entry.map
        return best

    # -- the decision ----------------------------------------------------------------------
    def decide(self, now_s: float, est: Estimates, waited_ms: float = 0.0) -> Decision:
        """The configuration for the next frame; ``waited_ms`` is how late it starts (queued behind others)."""
        self._memo = {}
        try:
            return self._decide_and_catch_up(now_s, est, waited_ms)
        finally:
            self._memo = None

    def _decide_and_catch_up(self, now_s: float, est: Estimates, waited_ms: float) -> Decision:
        decision = self._decide(now_s, est, waited_ms)
        if decision.config is not None and not decision.reason.startswith("explore") and self._catch_up(decision, est):
            return Decision(
                None,
                math.nan,
                f"skip: catching up, waited {self._waited_ms:.0f} ms; {decision.name} would start the next frame "
                "late too, and a frame on time is worth more than both",
            )
        return decision

    def _catch_up(self, decision: Decision, est: Estimates) -> bool:
        """Whether skipping this late frame beats running it, counting what each does to the next frames.

        A frame that starts late can only run what fits in the rest of its deadline, and if that
        holds the edge past the next capture the next frame starts late as well, and so on: a
        choice that holds the edge about one frame interval keeps a backlog for good.  Running is
        worth this frame's score plus the next ``CATCH_UP_FRAMES`` frames' starting as late as it
        leaves them; skipping, those frames' starting on time (``_frames_ahead``).  Skipping must
        win by ``CATCH_UP_GAIN`` and ``MIN_GAIN``.

        Found on a device without a local model (a 90 ms head, a 300 ms deadline, 5 fps): each
        split frame held the edge about 200 ms, every frame started 90 ms late, and half missed;
        one frame of lookahead saw the cost of a single late frame only, never worth a skip
        (ATT-LTE-driving rescaled to 1.17 Mbit/s: 14.4 mAP in time against 26.2 for static JPEG;
        with five frames, 28.1).  Before that, a device whose exit needed 240 of its 300 ms ran
        long shots 100 ms late frame after frame (the reason for the check in the first place).
        """
        interval = self._interval_ms()
        if self.objective != "accuracy" or interval is None or interval >= self.deadline_ms or self._waited_ms <= 0:
            return False
        entry = decision.config
        lateness = self._waited_ms + self._busy_ms(entry, decision.fallback, decision.late_fallback, est) - interval
        if lateness <= 0:
            return False
        run = (decision.expected_map or 0.0) + self._frames_ahead(est, lateness)  # its score, from ``_decision``
        return self._frames_ahead(est, 0.0) > CATCH_UP_GAIN * run + MIN_GAIN

    def _frames_ahead(self, est: Estimates, lateness_ms: float) -> float:
        """The summed scores of the next ``CATCH_UP_FRAMES`` frames, the first starting ``lateness_ms``
        late and each as late as the one before leaves it (a frame that would wait past the next
        capture is skipped as stale: it scores nothing and the backlog drops by one interval)."""
        interval = self._interval_ms() or 0.0
        total = 0.0
        for _ in range(CATCH_UP_FRAMES):
            if lateness_ms >= STALE_SHARE * interval:
                lateness_ms -= interval
                continue
            score, busy = self._next_frame_at(est, round(lateness_ms, -1))  # 10 ms steps share the memo
            total += score
            lateness_ms = max(0.0, lateness_ms + busy - interval)
        return total

    def _next_frame_at(self, est: Estimates, waited_ms: float) -> tuple[float, float]:
        """(score, time it holds the edge) of what a frame starting ``waited_ms`` late would run.

        What it would run, not the best there is: a better choice that has to wait out the
        hysteresis is not the next frame's (counted as if it were, a late local model was skipped
        every other frame for a remote choice the edge then held off from)."""
        saved = self._waited_ms
        self._waited_ms = waited_ms
        try:
            scores = {c.name: self._score(c, est) for c in self.profile.configs}
            feasible = [c for c in self.profile.configs if scores[c.name] is not None]
            if not feasible:
                return 0.0, 0.0
            best = max(feasible, key=lambda c: scores[c.name] or 0.0)
            current = self.current
            if current is not None and best.name != current.name and not self._must_leave(current, best, est):
                if scores[current.name] is None:
                    return 0.0, 0.0
                best = current
            return scores[best.name] or 0.0, self._busy_ms(best, *self._safety_nets(best, est), est)
        finally:
            self._waited_ms = saved

    def _decide(self, now_s: float, est: Estimates, waited_ms: float) -> Decision:
        self._waited_ms = max(0.0, waited_ms)
        self._learn_interval(now_s)
        interval = self._interval_ms()
        if interval is not None and interval < self.deadline_ms and self._waited_ms >= STALE_SHARE * interval:
            # A newer frame is already waiting behind this one: running this one would start that one
            # (and every later one) late again.  Frames that each hold the edge longer than the interval
            # otherwise keep it behind for good, every frame with little of its deadline left.
            return Decision(None, math.nan, f"skip: stale, waited {self._waited_ms:.0f} ms, a newer frame is due")
        explored = self._explore(now_s, est)
        if explored is not None:
            return explored
        if self._explore_left > 0 and self.current is not None and self.current.config.remote and not est.link_down:
            self._explore_left -= 1
            return self._decision(self.current, self.predict_ms(self.current, est), "explore: measuring the link", est)
        self._explore_left = 0
        best, predicted, reason = self._best(est)
        current = self.current
        if best is None:
            self.skipping = True
            if current is not None and current.config.remote:
                self._local_since = now_s  # off the link: explorations and probes start counting
            return Decision(None, math.nan, reason)
        was_skipping, self.skipping = self.skipping, False
        if current is None or was_skipping:
            return self._switch(best, predicted, reason, now_s, est)
        current_pred = self.predict_ms(current, est)
        if best.name == current.name:
            self._better_since = None
            return self._decision(current, current_pred, "keep", est)
        if self._must_leave(current, best, est):
            return self._switch(best, predicted, f"step down: {reason}", now_s, est)
        # Better than what we run: only after something better has looked feasible for long enough.
        if self._better_since is None:
            self._better_since = now_s
        # Moving between split points costs more than a width change; leaving local-only for the link
        # (after a probe got through) is a width-like step.
        split_change = best.config.split != current.config.split and current.config.remote
        wait = self.split_up_after_s if split_change else self.up_after_s
        if now_s - self._better_since >= wait:
            return self._switch(best, predicted, f"change after {wait:g}s: {reason}", now_s, est)
        return self._decision(current, current_pred, f"hold (better: {best.name})", est)

    def _must_leave(self, current: ConfigProfile, best: ConfigProfile, est: Estimates) -> bool:
        """Leave at once: the current choice is no longer worth running, a safe move does better, or the
        current local model keeps frames late (it falls behind the frames, or misses more often than
        not) and another choice does better."""
        if self.objective != "accuracy":
            return not self._fits(current, est) or (
                self.predict_ms(best, est) < self.predict_ms(current, est) and current.map < (self.accuracy_floor or 0)
            )
        score = self._score(current, est)
        if score is None:
            return True
        # Moves that cannot make a frame late happen at once when they are better: back to the
        # device, or to a remote choice with a local safety net (a hedge, or a late fallback that
        # fits).  A move to a remote choice without one waits until it has looked better a while,
        # unless the local model it leaves keeps frames late anyway (the two rules just below).
        best_score = self._score(best, est) or 0.0
        if (
            not current.config.remote
            and best_score > score + MIN_GAIN
            and (self._falls_behind(current, est) or self._mostly_late(current, est))
        ):
            # A local model that keeps frames late is no place to hold on to.  One that holds the edge
            # longer than the frame interval starts every next frame later: held for the hysteresis, it
            # missed frame after frame (and forced catch-up skips) while a better choice was known.  One
            # that misses its deadline more often than not (a slow device's exit) kept the edge off a
            # link that had recovered for 2 s at a time (shapes_fcos, ATT-LTE-driving-2016 at 16x, 130 ms
            # unhedged: 41.7 -> 45.4).  A margin, so that a near tie does not flip every frame.
            return True
        if current.config.remote and not best.config.remote and best_score > score:
            # A local model that may itself miss is no safe move: only a clear gain is worth leaving the
            # link at once for (a near tie flips with every noisy head time and the link goes unmeasured).
            if self._p_local(best, est) >= SAFE_LOCAL_P or best_score > score + max(SAFE_MOVE_GAIN, 0.1 * best.map):
                return True
        if (
            current.config.remote
            and best.config.remote
            and best.config.split == current.config.split
            and best_score > score + MIN_GAIN
            and self.predict_ms(best, est) < self.predict_ms(current, est)
        ):
            # A step down in size at the same split (a lower JPEG quality, a narrower width) happens
            # at once when it scores better, as an ABR player steps down: it cannot make a frame later
            # than holding on does, and holding kept a choice that missed frame after frame for the
            # whole hysteresis (shapes_fcos at 16x, 100 ms: JPEG q90 held at p 0.03 for 2 s while q50
            # scored better).  Steps up still wait; so does a change of split, which at once flapped
            # between a split and JPEG (shapes_fcos at 16x, 250 ms without the exit: 68.27 -> 66.28).
            return True
        return best.config.remote and self._safe(best, est) and best_score > score + SAFE_MOVE_GAIN

    def _safe(self, entry: ConfigProfile, est: Estimates) -> bool:
        """A frame run with ``entry`` delivers something in time even if its answer is late."""
        if not entry.config.remote:
            return True
        hedge = self.hedge_for(entry, est)
        if hedge is not None and hedge_in_time(entry, hedge, self.budget_ms, est.device_load) >= 1.0:
            return True
        return self.late_fallback_for(entry, est) is not None

    def _safety_nets(self, entry: ConfigProfile, est: Estimates) -> tuple[ConfigProfile | None, ConfigProfile | None]:
        """(hedge, late fallback) a frame run with ``entry`` gets: at most one, and none when local."""
        if not entry.config.remote:
            return None, None
        hedge = self.hedge_for(entry, est)
        return hedge, (self._unhedged(entry, est)[1] if hedge is None else None)

    def _decision(self, entry: ConfigProfile, predicted: float, reason: str, est: Estimates) -> Decision:
        hedge, late = self._safety_nets(entry, est)
        raw = self.p_in_time_raw(entry, est) if entry.config.remote else None
        p = None if raw is None else self.calibration.correct(raw)
        patience = None
        # Patience applies to the server's answer; a more accurate local model the device runs anyway
        # is waited for until the deadline.  A long shot (nothing local to fall back on, not worth
        # running by its own score) waits until the next frame is due: waiting until its deadline
        # started the next frame so late that it, too, could only be a long shot, and so on.
        score = self._score(entry, est)
        if hedge is not None and not prefers_local(entry, hedge):
            patience = self._patience_ms()
        elif entry.config.remote and hedge is None and late is None and score is None:
            patience = self._long_shot_patience_ms()
        return Decision(entry, predicted, reason, hedge, p, late, score, patience, raw)

    def _mostly_late(self, entry: ConfigProfile, est: Estimates) -> bool:
        """Whether a local model started on time misses the deadline more often than not (judged by the
        deadline, not this frame's budget: one late start says nothing about the model)."""
        return p_device_within(entry.head_ms * est.device_load, log_spread(entry), self.deadline_ms) < UNKNOWN_P

    def _falls_behind(self, entry: ConfigProfile, est: Estimates) -> bool:
        """Whether frames run with ``entry`` each hold the edge longer than the frame interval."""
        return sustained(self._busy_ms(entry, None, None, est), self._interval_ms()) < 1.0

    def _interval_ms(self) -> float | None:
        """The frame interval learnt from capture instants (None before two frames)."""
        return None if self._interval_s is None else self._interval_s * 1e3

    def _patience_ms(self) -> float | None:
        """How long after capture a hedged frame waits for the answer, if less than the deadline: one
        frame interval after it started, when frames come faster than the deadline.

        Counted from the start, not the capture: a frame that started late (the edge was behind)
        then keeps the backlog as it is instead of having to clear it alone.  From the capture, a
        frame that had waited half an interval had half an interval left for its answer, no remote
        choice was worth it, and a local model slower than the interval kept the edge behind."""
        if self._interval_s is None:
            return None
        patience = self._waited_ms + self._interval_s * 1e3
        return patience if patience < self.deadline_ms else None

    def _answer_wait_ms(self) -> float:
        """How long after its start a hedged frame waits for the answer (the budget, or the patience)."""
        patience = self._patience_ms()
        return self.budget_ms if patience is None else min(self.budget_ms, patience - self._waited_ms)

    def _long_shot_patience_ms(self) -> float | None:
        """How long after capture a long shot waits for its answer: until the next frame is due (from
        the capture, unlike a hedged frame: a long shot delivers nothing else, and the next frame
        may have a model that fits if it starts on time)."""
        if self._interval_s is not None and self._interval_s * 1e3 < self.deadline_ms:
            return self._interval_s * 1e3
        return None

    def _learn_interval(self, now_s: float) -> None:
        """The frame interval, from successive capture instants (decide's ``now_s`` less the wait)."""
        captured = now_s - self._waited_ms / 1e3
        if self._last_capture is not None and captured > self._last_capture:
            gap = captured - self._last_capture
            self._interval_s = gap if self._interval_s is None else self._interval_s + 0.2 * (gap - self._interval_s)
        self._last_capture = captured

    def _explore(self, now_s: float, est: Estimates) -> Decision | None:
        """Local because the link looked slow (not dead): now and then try it again.

        Local frames measure nothing about the link, so without this a device that stepped
        down would never learn the link recovered.  The try uses the fewest bytes among the
        remote configurations that would fit on a fast link; the wait doubles after each try
        that does not stick, so a really bad link costs few late frames.
        """
        current = self.current
        off_link = self.skipping or (current is not None and not current.config.remote)
        if current is None or not off_link or est.link_down:
            return None
        if now_s - self._local_since < self._explore_wait * EXPLORE_MIN_SHARE:
            return None  # no try comes sooner than this, whatever it costs
        fast_link = replace(self._hopeful(est), bandwidth_bps=1e12, transfers=())
        # Only a configuration that would beat the current one on a good link is worth the try.
        here = 0.0 if self.skipping else (self._score(current, est) or 0.0)
        candidates = [
            c for c in self.profile.configs if c.config.remote and c.map > here + MIN_GAIN and self._fits(c, fast_link)
        ]
        if not candidates:
            return None
        # A try that cannot miss, and that is worth more than its local result when it gets through.
        hedged = [c for c in candidates if (h := self.hedge_for(c, est)) is not None and c.map > h.map]
        choice = min(hedged or candidates, key=lambda c: c.bytes_p95)
        if now_s - self._local_since < self._explore_wait * explore_share(here, choice.map):
            return None
        self._explore_wait = min(self._explore_wait * 2, MAX_EXPLORE_WAIT_S)
        self._local_since = now_s
        self.skipping = False
        self._explore_left = EXPLORE_FRAMES - 1  # one frame says little: a few in a row
        return self._switch(choice, self.predict_ms(choice, est), "explore: is the link better now?", now_s, est)

    def probe_due(self, now_s: float) -> bool:
        """Ping the server now and then: while local or skipping, is the link (back) up?  On the link,
        rarely: a tiny payload's round trip is the base RTT, which frames of one size alone cannot
        tell apart from their transfer time (every frame slow looked like a long RTT)."""
        on_link = not self.skipping and self.current is not None and self.current.config.remote
        every = RTT_PROBE_EVERY_S if on_link else self.probe_every_s
        if self.current is None:
            return False
        if now_s - self._last_probe >= every:
            self._last_probe = now_s
            return True
        return False

    def _switch(self, entry: ConfigProfile, predicted: float, reason: str, now_s: float, est: Estimates) -> Decision:
        if self.current is not None and self.current.config.remote and not entry.config.remote:
            self._last_probe = now_s  # the first probe comes a full interval after leaving the link
            self._local_since = now_s
            if now_s - self._remote_since >= STICKY_REMOTE_S:
                self._explore_wait = self.explore_after_s  # the last stay on the link went well
        if entry.config.remote and (self.current is None or not self.current.config.remote):
            self._remote_since = now_s
        self.current = entry
        self._better_since = None
        return self._decision(entry, predicted, reason, est)
