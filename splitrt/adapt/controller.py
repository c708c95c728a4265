"""Per-frame choice of configuration (split point, codec, width, or local) from the current estimates.

Predicted latency of a configuration = head time x device load + bytes /
bandwidth + base RTT + jitter + server time (tail + reported queue).  The
default objective picks the most accurate configuration whose prediction,
inflated by a safety margin, fits the deadline; the other one picks the
fastest configuration above an accuracy floor.  When nothing fits, the
fastest configuration wins (local-only included).

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

Hysteresis: leaving a choice that can no longer meet the deadline is
immediate; any other change waits until the new choice has looked better
for a while, longer when it means changing split point than when only the
width changes (a split change also moves work between device and server).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .estimators import Estimates
from .profile import ConfigProfile, Profile

OBJECTIVES = ("accuracy", "latency")
STABLE_MARGIN = 0.05  # head, base RTT and server times vary little once measured
MAX_EXPLORE_WAIT_S = 60.0
P_UNHEDGED = 0.9  # how likely an unhedged remote frame must look to arrive in time
UNKNOWN_P = 0.5  # a hedged frame on a link not yet measured: a coin flip, and worth the try
MIN_GAIN = 1.0  # mAP a hedged remote frame must be expected to add over its local model to be worth sending
STICKY_REMOTE_S = 10.0  # a stay on the link this long resets the exploration back-off


@dataclass
class Decision:
    config: ConfigProfile
    predicted_ms: float
    reason: str
    #: Hedged: the local configuration the device runs while the frame is out (None: not hedged).
    fallback: ConfigProfile | None = None
    p_in_time: float | None = None  # the controller's estimate that the answer comes in time

    @property
    def name(self) -> str:
        return self.config.name

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "config": self.name,
            "predicted_ms": round(self.predicted_ms, 2),
            "reason": self.reason,
        }
        if self.fallback is not None:
            out["hedge"] = self.fallback.name
        if self.p_in_time is not None:
            out["p_in_time"] = round(self.p_in_time, 3)
        return out


class StaticController:
    """Always the same configuration (the baseline every experiment compares against)."""

    def __init__(self, profile: Profile, name: str) -> None:
        self.config = profile[name]

    def decide(self, now_s: float, estimates: Estimates, waited_ms: float = 0.0) -> Decision:
        return Decision(self.config, math.nan, "static")


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

    # -- prediction ------------------------------------------------------------------------
    def predict_ms(self, entry: ConfigProfile, est: Estimates) -> float:
        return sum(self._parts_ms(entry, est))

    def _parts_ms(self, entry: ConfigProfile, est: Estimates) -> tuple[float, float]:
        """(measured-stable part, transfer part): head, base RTT, jitter and server time vs bytes / bandwidth."""
        device = entry.head_ms * est.device_load
        if not entry.config.remote:
            return device, 0.0
        if est.link_down or est.bandwidth_bps is None or est.bandwidth_bps <= 0:
            return device, math.inf  # nothing goes out until a probe says the link is back
        transfer = entry.bytes_p95 * 8 / est.bandwidth_bps * 1e3
        network = (est.rtt_s + est.jitter_s) * 1e3
        server = entry.tail_ms + est.server_queue_s * 1e3
        return device + network + server, transfer

    def _fits(self, entry: ConfigProfile, est: Estimates) -> bool:
        """The prediction with a safety margin: small on what is measured and stable, larger on the transfer."""
        stable, transfer = self._parts_ms(entry, est)
        return stable * (1.0 + STABLE_MARGIN) + transfer * (1.0 + self.margin) <= self.deadline_ms - self._waited_ms

    def hedge_for(self, entry: ConfigProfile, est: Estimates) -> ConfigProfile | None:
        """The most accurate local configuration the device can run after ``entry``'s head in time."""
        if not (self.hedge and entry.config.remote):
            return None
        budget = self.deadline_ms - self._waited_ms
        head = entry.head_ms * est.device_load
        fits = [
            c
            for c in self.profile.configs
            if not c.config.remote
            and (head + c.device_ms_after(entry) * est.device_load) * (1.0 + STABLE_MARGIN) <= budget
        ]
        return max(fits, key=lambda c: c.map) if fits else None

    def p_in_time(self, entry: ConfigProfile, est: Estimates) -> float | None:
        """How likely ``entry``'s answer comes in time, from the recent transfer times (None: too few)."""
        stable, transfer = self._parts_ms(entry, est)
        if not math.isfinite(transfer):
            return 0.0
        budget_ms = self.deadline_ms - self._waited_ms - stable * (1.0 + STABLE_MARGIN)
        return est.p_within(entry.bytes_mean, budget_ms / 1e3)

    def _score(self, entry: ConfigProfile, est: Estimates) -> float | None:
        """Expected mAP of a frame run with ``entry`` (None: it would likely miss the deadline)."""
        if not entry.config.remote:
            return entry.map if self._fits(entry, est) else None
        hedge = self.hedge_for(entry, est)
        p = self.p_in_time(entry, est)
        if hedge is not None:
            p = UNKNOWN_P if p is None else p
            return p * entry.map + (1.0 - p) * hedge.map if p * (entry.map - hedge.map) >= MIN_GAIN else None
        # Unhedged, a late answer is a missed deadline: the estimate must fit with its margin and, on
        # a hedging edge, the recent transfers must say it is likely (too few of them, just after
        # start or an outage: hedged frames and explorations measure the link first).  An edge that
        # never hedges goes by the margin alone.
        known = not self.hedge or (p is not None and p >= P_UNHEDGED)
        return entry.map if self._fits(entry, est) and known else None

    def _best(self, est: Estimates) -> tuple[ConfigProfile, float, str]:
        predictions = {c.name: self.predict_ms(c, est) for c in self.profile.configs}
        if self.objective == "accuracy":
            scores = {c.name: self._score(c, est) for c in self.profile.configs}
            feasible = [c for c in self.profile.configs if scores[c.name] is not None]
            if feasible:
                best = max(feasible, key=lambda c: (round(scores[c.name], 1), -predictions[c.name]))
                hedged = " (hedged)" if self.hedge_for(best, est) is not None else ""
                return best, predictions[best.name], f"best expected mAP{hedged}"
        else:
            floor = self.accuracy_floor or 0.0
            good = [c for c in self.profile.configs if c.map >= floor]
            if good:
                best = min(good, key=lambda c: predictions[c.name])
                if self._fits(best, est):
                    return best, predictions[best.name], f"fastest with mAP >= {floor:g}"
        fastest = min(self.profile.configs, key=lambda c: predictions[c.name])
        return fastest, predictions[fastest.name], "nothing fits: fastest"

    # -- the decision ----------------------------------------------------------------------
    def decide(self, now_s: float, est: Estimates, waited_ms: float = 0.0) -> Decision:
        """The configuration for the next frame; ``waited_ms`` is how late it starts (queued behind others)."""
        self._waited_ms = max(0.0, waited_ms)
        explored = self._explore(now_s, est)
        if explored is not None:
            return explored
        best, predicted, reason = self._best(est)
        current = self.current
        if current is None:
            return self._switch(best, predicted, reason, now_s, est)
        current_pred = self.predict_ms(current, est)
        if best.name == current.name:
            self._better_since = None
            return self._decision(current, current_pred, "keep", est)
        leaving_local = best.config.remote and not current.config.remote
        if (not self._still_good(current, est) and not leaving_local) or self._ranks_below(best, current, est):
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

    def _still_good(self, entry: ConfigProfile, est: Estimates) -> bool:
        """The current choice can stay while the better one proves itself."""
        if self.objective == "accuracy":
            return self._score(entry, est) is not None or self.hedge_for(entry, est) is not None
        return self._fits(entry, est)

    def _decision(self, entry: ConfigProfile, predicted: float, reason: str, est: Estimates) -> Decision:
        hedge = self.hedge_for(entry, est)
        p = self.p_in_time(entry, est) if entry.config.remote else None
        return Decision(entry, predicted, reason, hedge, p)

    def _explore(self, now_s: float, est: Estimates) -> Decision | None:
        """Local because the link looked slow (not dead): now and then try it again.

        Local frames measure nothing about the link, so without this a device that stepped
        down would never learn the link recovered.  The try uses the fewest bytes among the
        remote configurations that would fit on a fast link; the wait doubles after each try
        that does not stick, so a really bad link costs few late frames.
        """
        current = self.current
        if current is None or current.config.remote or est.link_down:
            return None
        if now_s - self._local_since < self._explore_wait:
            return None
        fast_link = replace(est, bandwidth_bps=1e12)
        candidates = [c for c in self.profile.configs if c.config.remote and self._fits(c, fast_link)]
        if not candidates:
            return None
        self._explore_wait = min(self._explore_wait * 2, MAX_EXPLORE_WAIT_S)
        self._local_since = now_s
        # A try that cannot miss, and that is worth more than its local result when it gets through.
        hedged = [c for c in candidates if (h := self.hedge_for(c, est)) is not None and c.map > h.map]
        choice = min(hedged or candidates, key=lambda c: c.bytes_p95)
        return self._switch(choice, self.predict_ms(choice, est), "explore: is the link better now?", now_s, est)

    def probe_due(self, now_s: float) -> bool:
        """While running locally, ping the server now and then: is the link (back) up?"""
        if self.current is None or self.current.config.remote:
            return False
        if now_s - self._last_probe >= self.probe_every_s:
            self._last_probe = now_s
            return True
        return False

    def _ranks_below(self, best: ConfigProfile, current: ConfigProfile, est: Estimates) -> bool:
        """The preferred choice is worse than the current one by the objective: move at once."""
        if self.objective == "accuracy":  # only an unhedged remote choice is at risk of missing
            return best.map < current.map and current.config.remote and self.hedge_for(current, est) is None
        return self.predict_ms(best, est) < self.predict_ms(current, est) and current.map < (self.accuracy_floor or 0)

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
