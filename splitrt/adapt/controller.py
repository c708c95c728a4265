"""Per-frame choice of configuration (split point, codec, width, or local) from the current estimates.

Predicted latency of a configuration = head time x device load + bytes /
bandwidth + base RTT + jitter + server time (tail + reported queue).  The
default objective picks the most accurate configuration whose prediction,
inflated by a safety margin, fits the deadline; the other one picks the
fastest configuration above an accuracy floor.  When nothing fits, the
fastest configuration wins (local-only included).

Hysteresis: stepping down (the current choice no longer fits) is immediate;
stepping up waits until the better choice has looked feasible for a while,
longer when it means changing split point than when only the width changes
(a split change also moves work between device and server, and a wrong one
costs a missed frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .estimators import Estimates
from .profile import ConfigProfile, Profile

OBJECTIVES = ("accuracy", "latency")
STABLE_MARGIN = 0.05  # head, base RTT and server times vary little once measured
MAX_EXPLORE_WAIT_S = 60.0
STICKY_REMOTE_S = 10.0  # a stay on the link this long resets the exploration back-off


@dataclass
class Decision:
    config: ConfigProfile
    predicted_ms: float
    reason: str

    @property
    def name(self) -> str:
        return self.config.name

    def as_dict(self) -> dict[str, object]:
        return {"config": self.name, "predicted_ms": round(self.predicted_ms, 2), "reason": self.reason}


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

    def _best(self, est: Estimates) -> tuple[ConfigProfile, float, str]:
        predictions = {c.name: self.predict_ms(c, est) for c in self.profile.configs}
        if self.objective == "accuracy":
            feasible = [c for c in self.profile.configs if self._fits(c, est)]
            if feasible:
                best = max(feasible, key=lambda c: (round(c.map, 1), -predictions[c.name]))
                return best, predictions[best.name], "most accurate that fits"
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
            return self._switch(best, predicted, reason, now_s)
        current_pred = self.predict_ms(current, est)
        if best.name == current.name:
            self._better_since = None
            return Decision(current, current_pred, "keep")
        leaving_local = best.config.remote and not current.config.remote
        if (not self._fits(current, est) and not leaving_local) or self._ranks_below(best, current, est):
            return self._switch(best, predicted, f"step down: {reason}", now_s)
        # Better than what we run: only after something better has looked feasible for long enough.
        if self._better_since is None:
            self._better_since = now_s
        # Moving between split points costs more than a width change; leaving local-only for the link
        # (after a probe got through) is a width-like step.
        split_change = best.config.split != current.config.split and current.config.remote
        wait = self.split_up_after_s if split_change else self.up_after_s
        if now_s - self._better_since >= wait:
            return self._switch(best, predicted, f"step up after {wait:g}s: {reason}", now_s)
        return Decision(current, current_pred, f"hold (better: {best.name})")

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
        choice = min(candidates, key=lambda c: c.bytes_p95)
        return self._switch(choice, self.predict_ms(choice, est), "explore: is the link better now?", now_s)

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
        if self.objective == "accuracy":
            return best.map < current.map
        return self.predict_ms(best, est) < self.predict_ms(current, est) and current.map < (self.accuracy_floor or 0)

    def _switch(self, entry: ConfigProfile, predicted: float, reason: str, now_s: float) -> Decision:
        if self.current is not None and self.current.config.remote and not entry.config.remote:
            self._last_probe = now_s  # the first probe comes a full interval after leaving the link
            self._local_since = now_s
            if now_s - self._remote_since >= STICKY_REMOTE_S:
                self._explore_wait = self.explore_after_s  # the last stay on the link went well
        if entry.config.remote and (self.current is None or not self.current.config.remote):
            self._remote_since = now_s
        self.current = entry
        self._better_since = None
        return Decision(entry, predicted, reason)
