"""Deterministic virtual-time replay of a trace, a profile and a policy, frame by frame.

The frame loop is the same one the live adaptive edge runs: frames are
captured at a fixed rate and handled one at a time; a remote frame runs its
head, leaves over a FIFO link shaped by the trace, is processed by the
server and answered after the base RTT.  What happens to one frame, given
when the device and the link are free and what the policy chose (a
``Plan``), is one pure function, ``play``: every policy, the oracle's
dynamic programme and the replay of its plan go through it, so they cannot
disagree about the rules.

- A hedged frame starts its local model as soon as it is sent and delivers
  the server's answer if it comes by the deadline, the local result
  otherwise (mode ``fallback``).
- An unhedged frame with a ``fallback`` waits until the latest instant the
  fallback can still start and finish in time, then runs it.  When no local
  model can finish in time the edge stops waiting at the deadline and
  reports the frame missed (mode ``timeout``): running a model that is late
  anyway would only make every later frame later.
- A skipped frame (the policy saw that nothing can meet its deadline) costs
  nothing and is reported as ``skipped``; it counts as a miss.

While it runs locally (or skips) the adaptive edge pings the server now and
then to learn when the link is back.  Bytes of an abandoned frame still
drain through the link, as they do through the live proxy, and its late
answer still teaches the estimators when it comes.  No real time passes: a
17-minute trace runs in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..channel.traces import Trace
from ..policy import HAND_OVER_S, LATE_ANSWER_S, PROBE_BYTES, PROBE_TIMEOUT_S, give_up_instant
from .controller import AdaptiveController, Decision, StaticController, prefers_local
from .estimators import LinkEstimator
from .metrics import summarize
from .profile import ConfigProfile, Profile, log_spread

ADAPTIVE = ("adaptive", "adaptive-unhedged")
HEDGED_SUFFIX = "+hedge"
LATENCY_CAP_FACTOR = 10.0  # a frame never answered counts this many deadlines late


@dataclass(frozen=True)
class Plan:
    """What the edge does with one frame: a configuration (None: skip), a hedge, or a fallback."""

    config: str | None
    hedge: str | None = None
    fallback: str | None = None
    #: Hedged, or unhedged without a fallback: wait for the answer at most this long after capture
    #: (None: until the deadline).
    patience_s: float | None = None

    @classmethod
    def of(cls, decision: Decision) -> Plan:
        if decision.config is None:
            return cls(None)
        hedge = decision.fallback.name if decision.fallback is not None else None
        fallback = decision.late_fallback.name if decision.late_fallback is not None else None
        patience = decision.patience_ms / 1e3 if decision.patience_ms is not None else None
        return cls(decision.config.name, hedge, fallback, patience)


@dataclass
class Outcome:
    """What ``play`` says happened to one frame."""

    mode: str  # local | remote | fallback | timeout | skipped
    delivered: ConfigProfile | None  # whose result reached the application (None: nothing)
    done: float  # when the edge is free again
    latency_ms: float
    hit: bool
    link_free: float
    nbytes: int = 0
    sent: float | None = None
    answer: float | None = None  # when the server's answer arrives (remote configurations)
    #: A hedged frame whose more accurate local model won: its answer may still come in time,
    #: so it is no timeout (the late answer, if any, measures the link when it comes).
    local_first: bool = False

    @property
    def accuracy_in_time(self) -> float:
        return self.delivered.map if self.hit and self.delivered is not None else 0.0


@dataclass
class FrameRecord:
    index: int
    captured_s: float
    config: str
    mode: str  # local | remote | fallback | timeout | skipped
    latency_ms: float
    hit: bool
    accuracy: float  # mAP of the delivered result (0 for nothing)
    accuracy_in_time: float  # mAP if the result came by the deadline, else 0
    bytes_sent: int
    predicted_ms: float = math.nan
    p_in_time: float | None = None
    arrived_in_time: bool | None = None  # remote frames: did the server's answer come by the deadline
    bandwidth_mbps: float | None = None
    capacity_mbps: float = 0.0
    reason: str = ""
    plan: tuple[str | None, str | None, str | None, float | None] = (None, None, None, None)


@dataclass
class RunResult:
    policy: str
    frames: list[FrameRecord] = field(default_factory=list)
    #: (edge free, link free, accumulated mAP in time) after each frame: the oracle protects these.
    states: list[tuple[float, float, float]] = field(default_factory=list)

    def summary(self, deadline_ms: float) -> dict[str, float | str | int]:
        return summarize(self.policy, self.frames, deadline_ms)

    @property
    def plans(self) -> list[Plan]:
        return [Plan(*f.plan) for f in self.frames]


@dataclass
class Scenario:
    """Everything that is the same for every policy of one experiment."""

    profile: Profile
    trace: Trace
    deadline_ms: float
    fps: float = 5.0
    seconds: float | None = None  # default: the trace's length
    base_rtt_ms: float = 40.0
    load: Callable[[float], float] = lambda t: 1.0  # actual device slowdown at time t (contention)
    seed: int = 0
    trace_offset_s: float = 0.0

    @property
    def frame_count(self) -> int:
        seconds = self.trace.duration_s if self.seconds is None else self.seconds
        return int(seconds * self.fps)


class Simulator:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.deadline = scenario.deadline_ms / 1e3
        self.delay = scenario.base_rtt_ms / 2e3
        self.by_name = {c.name: c for c in scenario.profile.configs}
        rng = np.random.default_rng(scenario.seed)  # the same byte and time draws for every policy
        self.draws = [{c.name: self._bytes(c, rng) for c in scenario.profile.configs} for _ in range(self.frames)]
        spread = {c.name: log_spread(c) for c in scenario.profile.configs}
        normal = np.random.default_rng(scenario.seed + 1).standard_normal((self.frames, len(spread)))
        #: Per frame and configuration: its device time over the profiled median (lognormal, the
        #: profile's p95 at the 95th percentile).  A model timed at exactly the deadline misses half
        #: the time, as on a real device, instead of never.
        self.slowness = [dict(zip(spread, np.exp(row * np.array(list(spread.values()))))) for row in normal]

    @property
    def frames(self) -> int:
        return self.s.frame_count

    @staticmethod
    def _bytes(entry: ConfigProfile, rng: np.random.Generator) -> int:
        if not entry.config.remote:
            return 0
        if entry.bytes_samples:
            return int(entry.bytes_samples[rng.integers(len(entry.bytes_samples))])
        return int(entry.bytes_mean)

    # -- the rules ------------------------------------------------------------------------------------
    def captured(self, index: int) -> float:
        return index / self.s.fps

    def transfer(self, sent: float, link_free: float, nbytes: int) -> float:
        """When ``nbytes`` handed to the FIFO link at ``sent`` have crossed it (before the one-way delay)."""
        offset = self.s.trace_offset_s
        return self.s.trace.finish_time(max(sent, link_free) + offset, nbytes) - offset

    def play(self, index: int, edge_free: float, link_free: float, plan: Plan) -> Outcome:
        """One frame under ``plan``, the device free from ``edge_free`` and the link from ``link_free``."""
        captured = self.captured(index)
        start = max(captured, edge_free)
        due = captured + self.deadline
        if plan.config is None:
            return Outcome("skipped", None, start, math.nan, False, link_free)
        entry = self.by_name[plan.config]
        slow = self.slowness[index]
        load = self.s.load(start)
        sent = start + entry.head_ms * load * slow[entry.name] / 1e3
        if not entry.config.remote:
            return self._outcome("local", entry, sent, captured, link_free)
        nbytes = self.draws[index][entry.name]
        crossed = self.transfer(sent, link_free, nbytes)
        answer = crossed + self.delay + entry.tail_ms / 1e3 + self.delay
        common = {"nbytes": nbytes, "sent": sent, "answer": answer}
        if plan.hedge is not None:
            hedge = self.by_name[plan.hedge]
            local_done = sent + hedge.device_ms_after(entry) * load * slow[hedge.name] / 1e3
            # the local result is kept until the deadline (or the patience) in case the better answer comes
            wait_until = due if plan.patience_s is None else captured + min(self.deadline, plan.patience_s)
            last_moment = wait_until - HAND_OVER_S
            if prefers_local(entry, hedge):  # the local model is the better result, the answer the safety net
                if local_done <= last_moment:
                    return self._outcome("fallback", hedge, local_done, captured, crossed, local_first=True, **common)
                if answer <= last_moment:  # waited for the local model as long as it could
                    return self._outcome("remote", entry, last_moment, captured, crossed, **common)
            ready = max(last_moment, local_done)
            if answer <= ready:
                return self._outcome("remote", entry, answer, captured, crossed, **common)
            return self._outcome("fallback", hedge, ready, captured, crossed, **common)
        fallback = self.by_name[plan.fallback] if plan.fallback is not None else None
        fallback_s = fallback.head_ms * load * slow[fallback.name] / 1e3 if fallback is not None else None
        give_up = give_up_instant(captured, sent, self.deadline, fallback_s)
        if fallback is None and plan.patience_s is not None:
            give_up = max(sent, min(give_up, captured + plan.patience_s))
        if answer <= give_up:
            return self._outcome("remote", entry, answer, captured, crossed, **common)
        if fallback_s is not None and give_up + fallback_s <= due + 1e-9:
            return self._outcome("fallback", fallback, give_up + fallback_s, captured, crossed, **common)
        # Nothing can be delivered in time: stop waiting at the deadline, report the frame missed.
        late_ms = (min(answer, captured + LATENCY_CAP_FACTOR * self.deadline) - captured) * 1e3
        return Outcome("timeout", None, give_up, float(late_ms), False, crossed, **common)

    def _outcome(
        self, mode: str, entry: ConfigProfile, done: float, captured: float, link_free: float, **kw
    ) -> Outcome:
        latency = (done - captured) * 1e3
        return Outcome(mode, entry, done, float(latency), bool(latency <= self.s.deadline_ms + 1e-9), link_free, **kw)

    # -- policies -------------------------------------------------------------------------------------
    def controller_for(self, policy: str) -> AdaptiveController | StaticController:
        if policy in ADAPTIVE:
            return AdaptiveController(self.s.profile, self.s.deadline_ms, hedge=policy == "adaptive")
        if policy.startswith("static:"):
            name = policy.split(":", 1)[1]
            hedged = name.endswith(HEDGED_SUFFIX)
            name = name.removesuffix(HEDGED_SUFFIX)
            return StaticController(self.s.profile, name, self.s.deadline_ms, hedge=hedged)
        raise ValueError(f"unknown policy {policy!r}: adaptive, adaptive-unhedged, oracle or static:<configuration>")

    def run(self, policy: str, controller: AdaptiveController | StaticController | None = None) -> RunResult:
        """``policy``: "adaptive", "adaptive-unhedged", "static:<configuration>[+hedge]"; "oracle" see ``oracle``."""
        if policy == "oracle" and controller is None:
            from .oracle import oracle_run

            return oracle_run(self)
        controller = controller or self.controller_for(policy)
        adaptive = isinstance(controller, AdaptiveController)
        result = RunResult(policy)
        estimator = LinkEstimator()
        probes: list[tuple[float, float]] = []  # (sent, answered) of pings in flight
        late_frames: list[tuple[float, float, int, float]] = []  # (sent, answered, bytes, server s)
        outcomes: list[tuple[float, float, bool]] = []  # (when the edge knows, p_raw, answered in time)
        edge_free = link_free = score = 0.0
        for index in range(self.frames):
            captured = self.captured(index)
            start = max(captured, edge_free)
            estimator.tick(start)
            probes = [p for p in probes if not self._probe_settled(p, start, estimator)]
            late_frames = [f for f in late_frames if not self._late_settled(f, start, estimator)]
            for _known, p, in_time in [o for o in outcomes if o[0] <= start]:
                controller.outcome(p, in_time)
            outcomes = [o for o in outcomes if o[0] > start]
            decision = controller.decide(start, estimator.snapshot(), (start - captured) * 1e3)
            if adaptive and not probes and controller.probe_due(start):
                # a small ping over the same link: has it come back?
                crossed = self.transfer(start, link_free, PROBE_BYTES)
                link_free = crossed
                probes.append((start, crossed + 2 * self.delay))
            plan = Plan.of(decision)
            outcome = self.play(index, edge_free, link_free, plan)
            self._teach(estimator, index, outcome, decision, plan, start, late_frames)
            if decision.p_raw is not None and outcome.answer is not None:
                due = captured + self.deadline
                outcomes.append((min(outcome.answer, due), decision.p_raw, outcome.answer <= due + 1e-9))
            edge_free, link_free = outcome.done, outcome.link_free
            score += outcome.accuracy_in_time
            record = self.record(index, outcome, plan, decision)
            record.bandwidth_mbps = self._bandwidth(estimator)
            result.frames.append(record)
            result.states.append((edge_free, link_free, score))
        return result

    def record(self, index: int, outcome: Outcome, plan: Plan, decision: Decision | None = None) -> FrameRecord:
        delivered = outcome.delivered
        arrived = None
        if outcome.answer is not None:
            arrived = bool(outcome.answer <= self.captured(index) + self.deadline + 1e-9)
        return FrameRecord(
            index=index,
            captured_s=self.captured(index),
            config=plan.config or "skip",
            mode=outcome.mode,
            latency_ms=outcome.latency_ms,
            hit=outcome.hit,
            accuracy=delivered.map if delivered is not None else 0.0,
            accuracy_in_time=outcome.accuracy_in_time,
            bytes_sent=outcome.nbytes,
            predicted_ms=decision.predicted_ms if decision is not None else math.nan,
            p_in_time=decision.p_in_time if decision is not None else None,
            arrived_in_time=arrived,
            capacity_mbps=self._capacity(self.captured(index)),
            reason=decision.reason if decision is not None else "",
            plan=(plan.config, plan.hedge, plan.fallback, plan.patience_s),
        )

    def _teach(
        self,
        estimator: LinkEstimator,
        index: int,
        outcome: Outcome,
        decision: Decision,
        plan: Plan,
        start: float,
        late: list[tuple[float, float, int, float]],
    ) -> None:
        """What the edge measures from its own frame: the head time, and the answer or its absence."""
        entry = decision.config
        if entry is None:
            return
        estimator.head_time(entry.head_ms * self.s.load(start) * self.slowness[index][entry.name], entry.head_ms)
        if outcome.sent is None or outcome.answer is None:
            return
        server_s = entry.tail_ms / 1e3
        if outcome.mode == "remote" or outcome.answer <= outcome.done:
            estimator.answered(outcome.nbytes, outcome.answer - outcome.sent, server_s, sent_at=outcome.sent)
            return
        estimator.awaiting(outcome.nbytes, outcome.sent)
        if outcome.local_first:  # not late: the answer is still on its way
            late.append((outcome.sent, outcome.answer, outcome.nbytes, server_s))
            return
        stopped = outcome.done
        if outcome.mode == "fallback" and plan.hedge is None:  # it waited, then ran the fallback
            stopped -= (
                outcome.delivered.head_ms * self.s.load(start) * self.slowness[index][outcome.delivered.name] / 1e3
            )
        # The call stays open a while (as the live edge's does): its late answer measures the link.
        estimator.timed_out(outcome.nbytes, max(1e-3, stopped - outcome.sent), server_s, pending=True)
        late.append((outcome.sent, outcome.answer, outcome.nbytes, server_s))

    @staticmethod
    def _bandwidth(estimator: LinkEstimator) -> float | None:
        predicted = estimator.bandwidth.predict()
        return None if predicted is None else predicted / 1e6

    def _capacity(self, t: float) -> float:
        offset = self.s.trace_offset_s
        return self.s.trace.capacity(offset + t - 0.5, offset + t + 0.5) * 8 / 1e6

    @staticmethod
    def _late_settled(frame: tuple[float, float, int, float], now: float, estimator: LinkEstimator) -> bool:
        """A frame given up on: once its answer is in, it is a (slow) transfer sample like any other."""
        sent, answered, nbytes, server_s = frame
        if answered <= now and answered - sent <= LATE_ANSWER_S:
            estimator.answered(nbytes, answered - sent, server_s, sent_at=sent)
            return True
        if now - sent > LATE_ANSWER_S:  # the edge stopped listening: lost
            estimator.lost(nbytes, LATE_ANSWER_S, server_s, sent_at=sent)
            return True
        return False

    @staticmethod
    def _probe_settled(probe: tuple[float, float], now: float, estimator: LinkEstimator) -> bool:
        sent, answered = probe
        if answered <= now:
            estimator.probe_answered(answered - sent)
            return True
        return now - sent > PROBE_TIMEOUT_S  # lost in the outage: the next one is due later

    def replay(self, policy: str, plans: list[Plan]) -> RunResult:
        """A fixed per-frame plan played through the same rules (the oracle's, found by search)."""
        result = RunResult(policy)
        edge_free = link_free = score = 0.0
        for index, plan in enumerate(plans):
            outcome = self.play(index, edge_free, link_free, plan)
            edge_free, link_free = outcome.done, outcome.link_free
            score += outcome.accuracy_in_time
            record = self.record(index, outcome, plan)
            record.reason = policy
            result.frames.append(record)
            result.states.append((edge_free, link_free, score))
        return result


def policies(profile: Profile, hedged: bool = True) -> list[str]:
    """Adaptive (hedged and not), every static configuration (and hedged where a local model exists), oracle."""
    statics = [f"static:{name}" for name in profile.names]
    if hedged and profile.local_configs():
        statics += [f"static:{c.name}{HEDGED_SUFFIX}" for c in profile.configs if c.config.remote]
    return [*ADAPTIVE, *statics, "oracle"]
