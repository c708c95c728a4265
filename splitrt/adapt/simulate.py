"""Deterministic virtual-time replay of a trace, a profile and a policy, frame by frame.

The frame loop is the same one the live adaptive edge runs: frames are
captured at a fixed rate and handled one at a time; a remote frame runs
its head, leaves over a FIFO link shaped by the trace, is processed by the
server and answered after the base RTT.  A hedged frame (the controller
named a local model to run meanwhile) starts that model as soon as it is
sent and delivers the server's answer if it comes by the deadline, the
local result otherwise (mode ``fallback``); the device is free again when
the answer arrives or the local model ends.  An unhedged adaptive frame
that stops waiting runs the fastest local model (mode ``fallback``, see
``fallback_instant``).  While it runs locally the adaptive edge pings the
server now and then to learn when the link is back; a static edge gives up
at the deadline (mode ``timeout``).  Bytes of an abandoned frame still
drain through the link, as they do through the live proxy, and its late
answer still teaches the estimators when it comes.

No real time passes: a 17-minute trace runs in seconds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..channel.traces import Link, Trace
from .controller import AdaptiveController, Decision, StaticController
from .estimators import LinkEstimator
from .profile import ConfigProfile, Profile

ADAPTIVE = ("adaptive", "adaptive-unhedged")
LATENCY_CAP_FACTOR = 10.0  # a frame never answered counts this many deadlines late
PROBE_BYTES = 200  # a probe with its gRPC framing
PROBE_TIMEOUT_S = 1.0
HAND_OVER_S = 0.003  # a hedged frame stops waiting this long before its deadline, to deliver in time
LATE_ANSWER_S = 1.0  # how long the edge keeps listening for the answer of a frame it gave up on


def fallback_instant(captured: float, start: float, deadline: float, local_s: float, predicted_ms: float) -> float:
    """When an adaptive edge stops waiting for the server and runs the frame locally.

    If the answer is expected early enough to leave time for the local model, wait only
    until the local model must start to still meet the deadline; otherwise (the device is
    too slow for that) wait until the deadline itself and deliver the local result late.
    """
    in_time = captured + deadline - local_s
    expected = start + predicted_ms / 1e3 if math.isfinite(predicted_ms) else math.inf
    return in_time if expected <= in_time else captured + deadline


@dataclass
class FrameRecord:
    index: int
    captured_s: float
    config: str
    mode: str  # local | remote | fallback | timeout
    latency_ms: float
    hit: bool
    accuracy: float
    bytes_sent: int
    predicted_ms: float = math.nan
    bandwidth_mbps: float | None = None
    capacity_mbps: float = 0.0


@dataclass
class RunResult:
    policy: str
    frames: list[FrameRecord] = field(default_factory=list)

    def summary(self, deadline_ms: float) -> dict[str, float | str | int]:
        lat = np.array([f.latency_ms for f in self.frames])
        duration_min = (self.frames[-1].captured_s - self.frames[0].captured_s) / 60 if len(self.frames) > 1 else 1.0
        switches = sum(1 for a, b in zip(self.frames, self.frames[1:]) if a.config != b.config)
        return {
            "policy": self.policy,
            "frames": len(self.frames),
            "hit_rate": float(np.mean([f.hit for f in self.frames])),
            "mean_latency_ms": float(lat.mean()),
            "p95_latency_ms": float(np.percentile(lat, 95)),
            "mean_accuracy": statistics.fmean(f.accuracy for f in self.frames),
            "accuracy_in_time": statistics.fmean(f.accuracy if f.hit else 0.0 for f in self.frames),
            "bytes_sent": int(sum(f.bytes_sent for f in self.frames)),
            "switches": switches,
            "switches_per_min": switches / max(duration_min, 1e-9),
            "fallbacks": sum(1 for f in self.frames if f.mode == "fallback"),
            "deadline_ms": deadline_ms,
        }


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
        self.fallback = scenario.profile.fastest_local()

    def _bytes(self, entry: ConfigProfile, rng: np.random.Generator) -> int:
        if not entry.config.remote:
            return 0
        if entry.bytes_samples:
            return int(entry.bytes_samples[rng.integers(len(entry.bytes_samples))])
        return int(entry.bytes_mean)

    def _capacity(self, t: float) -> float:
        offset = self.s.trace_offset_s
        return self.s.trace.capacity(offset + t - 0.5, offset + t + 0.5) * 8 / 1e6

    def run(self, policy: str, controller: AdaptiveController | StaticController | None = None) -> RunResult:
        """``policy`` is "adaptive", "adaptive-unhedged" (never hedges), "oracle" or "static:<configuration>"."""
        s = self.s
        rng = np.random.default_rng(s.seed)  # same byte draws for every policy
        link = Link(s.trace, s.base_rtt_ms / 2e3, start_s=s.trace_offset_s)
        estimator = LinkEstimator()
        if controller is None:
            if policy in ADAPTIVE:
                controller = AdaptiveController(s.profile, s.deadline_ms, hedge=policy == "adaptive")
            elif policy.startswith("static:"):
                controller = StaticController(s.profile, policy.split(":", 1)[1])
        result = RunResult(policy)
        probes: list[tuple[float, float]] = []  # (sent, answered) of pings in flight
        late_frames: list[tuple[float, float, int, float]] = []  # (sent, answered, bytes, server s) of late frames
        edge_free = 0.0
        deadline = s.deadline_ms / 1e3
        for index in range(s.frame_count):
            captured = index / s.fps
            start = max(captured, edge_free)
            load = s.load(start)
            draws = {c.name: self._bytes(c, rng) for c in s.profile.configs}
            if policy == "oracle":
                decision = self._oracle(link, start, captured, load, draws)
            else:
                probes = [p for p in probes if not self._probe_settled(p, start, estimator)]
                late_frames = [f for f in late_frames if not self._late_settled(f, start, estimator)]
                decision = controller.decide(start, estimator.snapshot(), (start - captured) * 1e3)
                if isinstance(controller, AdaptiveController) and not probes and controller.probe_due(start):
                    # a small ping over the same link: has it come back?
                    probes.append((start, link.send(start, PROBE_BYTES) + s.base_rtt_ms / 2e3))
            entry = decision.config
            head = entry.head_ms * load / 1e3
            estimator.head_time(entry.head_ms * load, entry.head_ms)
            if not entry.config.remote:
                done = start + head
                record = self._record(index, captured, entry, "local", done, 0, decision)
            else:
                nbytes = draws[entry.name]
                sent = start + head
                answer = link.send(sent, nbytes) + entry.tail_ms / 1e3 + s.base_rtt_ms / 2e3
                if decision.fallback is not None:
                    record, done = self._hedged(
                        index, captured, sent, answer, nbytes, decision, load, estimator, late_frames
                    )
                    record.bandwidth_mbps = self._bandwidth(estimator)
                    record.capacity_mbps = self._capacity(captured)
                    result.frames.append(record)
                    edge_free = done
                    continue
                if policy in ADAPTIVE:
                    give_up = fallback_instant(
                        captured, start, deadline, self.fallback.head_ms * load / 1e3, decision.predicted_ms
                    )
                    give_up = max(give_up, sent)
                else:
                    give_up = captured + deadline if policy.startswith("static:") else math.inf
                if answer <= give_up:
                    estimator.answered(nbytes, answer - sent, entry.tail_ms / 1e3)
                    done = answer
                    record = self._record(index, captured, entry, "remote", done, nbytes, decision)
                elif policy in ADAPTIVE:
                    estimator.timed_out(nbytes, give_up - sent, entry.tail_ms / 1e3)
                    late_frames.append((sent, answer, nbytes, entry.tail_ms / 1e3))
                    done = give_up + self.fallback.head_ms * load / 1e3
                    record = self._record(index, captured, self.fallback, "fallback", done, nbytes, decision)
                    record.config = entry.name
                else:  # static: the frame is late; the edge moves on at the deadline
                    late = min(answer, captured + LATENCY_CAP_FACTOR * deadline)
                    record = self._record(index, captured, entry, "timeout", late, nbytes, decision)
                    record.hit = False
                    done = give_up
            record.bandwidth_mbps = self._bandwidth(estimator)
            record.capacity_mbps = self._capacity(captured)
            result.frames.append(record)
            edge_free = done
        return result

    def _hedged(
        self,
        index: int,
        captured: float,
        sent: float,
        answer: float,
        nbytes: int,
        decision: Decision,
        load: float,
        estimator: LinkEstimator,
        late: list[tuple[float, float, int, float]],
    ) -> tuple[FrameRecord, float]:
        """A frame sent with its local model running meanwhile: the server's answer if in time, else local."""
        entry, fallback = decision.config, decision.fallback
        assert fallback is not None
        local_done = sent + fallback.device_ms_after(entry) * load / 1e3
        # the local result is kept until the deadline in case the (better) answer still comes
        ready = max(captured + self.s.deadline_ms / 1e3 - HAND_OVER_S, local_done)
        if answer <= ready:
            estimator.answered(nbytes, answer - sent, entry.tail_ms / 1e3)
            return self._record(index, captured, entry, "remote", answer, nbytes, decision), answer
        estimator.timed_out(nbytes, ready - sent, entry.tail_ms / 1e3)
        late.append((sent, answer, nbytes, entry.tail_ms / 1e3))
        record = self._record(index, captured, fallback, "fallback", ready, nbytes, decision)
        record.config = entry.name
        return record, ready

    @staticmethod
    def _bandwidth(estimator: LinkEstimator) -> float | None:
        predicted = estimator.bandwidth.predict()
        return None if predicted is None else predicted / 1e6

    @staticmethod
    def _late_settled(frame: tuple[float, float, int, float], now: float, estimator: LinkEstimator) -> bool:
        """A frame given up on: once its answer is in, it is a (slow) transfer sample like any other."""
        sent, answered, nbytes, server_s = frame
        if answered <= now:
            if answered - sent <= LATE_ANSWER_S:
                estimator.answered(nbytes, answered - sent, server_s)
            return True
        return False

    @staticmethod
    def _probe_settled(probe: tuple[float, float], now: float, estimator: LinkEstimator) -> bool:
        sent, answered = probe
        if answered <= now:
            estimator.probe_answered(answered - sent)
            return True
        return now - sent > PROBE_TIMEOUT_S  # lost in the outage: the next one is due later

    def _record(
        self, index: int, captured: float, entry: ConfigProfile, mode: str, done: float, nbytes: int, decision: Decision
    ) -> FrameRecord:
        latency = (done - captured) * 1e3
        return FrameRecord(
            index=index,
            captured_s=captured,
            config=entry.name,
            mode=mode,
            latency_ms=latency,
            hit=bool(latency <= self.s.deadline_ms + 1e-9),
            accuracy=entry.map,
            bytes_sent=nbytes,
            predicted_ms=decision.predicted_ms,
        )

    def _oracle(self, link: Link, start: float, captured: float, load: float, draws: dict[str, int]) -> Decision:
        """The best configuration in hindsight: knows the bandwidth to come and the real load."""
        best, best_key = None, None
        for entry in self.s.profile.configs:
            sent = start + entry.head_ms * load / 1e3
            if entry.config.remote:
                done = link.peek(sent, draws[entry.name]) + entry.tail_ms / 1e3 + self.s.base_rtt_ms / 2e3
            else:
                done = sent
            latency = (done - captured) * 1e3
            fits = latency <= self.s.deadline_ms
            key = (fits, entry.map if fits else -latency, -latency)
            if best_key is None or key > best_key:
                best, best_key = entry, key
        return Decision(best, -best_key[2], "oracle")


def policies(profile: Profile) -> list[str]:
    return [*ADAPTIVE, "oracle"] + [f"static:{name}" for name in profile.names]
