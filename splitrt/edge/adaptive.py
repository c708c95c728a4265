"""The adaptive edge loop: per frame, estimates -> controller decision -> configure the client -> send.

The same frame loop the simulator replays (``splitrt.adapt.simulate``):
frames are handled one at a time.  A hedged frame (the controller named a
local model that fits after the head) runs that model while it waits and
keeps the server's answer only if it comes by the deadline
(``splitrt.edge.hedge``).  An unhedged remote frame waits for its answer
only until its fallback (the controller's ``late_fallback``) must start to
still meet the deadline, then runs it (mode ``fallback``); without one that
fits it waits until the deadline and reports the frame missed (mode
``timeout``) instead of running a model that would be late anyway.  A frame
the controller skips (nothing can make its deadline) is reported with mode
``skipped``.  Every frame yields exactly one result, and its JSON line
carries the decision and the estimates behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ..adapt.controller import AdaptiveController, StaticController, prefers_local
from ..adapt.estimators import LinkEstimator
from ..adapt.profile import LOCAL, ConfigProfile, Profile
from ..policy import HAND_OVER_S, LATE_ANSWER_S, PROBE_TIMEOUT_S, give_up_instant
from .client import SplitClient
from .frames import FrameResult

log = logging.getLogger("splitrt.edge")

PROBE_PADDING = 64  # with gRPC and HTTP/2 framing about the simulator's PROBE_BYTES
LATE_LISTEN_S = LATE_ANSWER_S  # how long a hedged frame's call is kept open past its deadline


class AdaptiveEdge:
    def __init__(
        self,
        client: SplitClient,
        profile: Profile,
        controller: AdaptiveController | StaticController,
        deadline_ms: float,
    ) -> None:
        if profile.model != client.spec.arch:
            raise ValueError(f"profile is for model {profile.model!r}, the client runs {client.spec.arch!r}")
        self.client = client
        self.profile = profile
        self.controller = controller
        self.deadline_s = deadline_ms / 1e3
        self.estimator = LinkEstimator(cpu_sampling=True)
        self.adaptive = isinstance(controller, AdaptiveController)
        self._on_failure = "local" if self.adaptive else client.on_failure
        client.max_resends = 0  # a late frame is not worth resending; the next frame is already due
        self.t0 = time.perf_counter()
        self._probe: threading.Thread | None = None
        self._probe_answers: list[float] = []  # round-trip times of pings that got through

    def close(self) -> None:
        """Wait for a link probe still out (a gRPC call must not outlive the process's channel)."""
        if self._probe is not None:
            self._probe.join(PROBE_TIMEOUT_S + 1.0)
            self._probe = None

    def run(self, frames: Iterable[Any], fps: float | None = None) -> Iterator[FrameResult]:
        """One result per frame.

        With ``fps`` frames are due at a fixed rate and each deadline counts from the
        frame's due time, so time spent waiting behind a slow frame counts against it
        (as in the simulator); without, from when the source handed the frame over.
        """
        start = None
        for index, image in enumerate(frames):
            if start is None:
                self.warm_up(image)  # first-call costs (allocations, lazy init) are not the link's fault
                start = time.perf_counter()
            if fps:
                captured = start + index / fps
                wait = captured - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            else:
                captured = time.perf_counter()
            yield self.process(image, captured)

    def warm_up(self, image: Any) -> None:
        """Run every profiled configuration's device part once on ``image``."""
        from ..adapt.profile import Runner
        from .frames import to_image_tensor

        tensor = to_image_tensor(image)
        for entry in self.profile.configs:
            Runner(self.client.model, entry.config).device_part(tensor)

    def process(self, image: Any, captured: float) -> FrameResult:
        now = time.perf_counter()
        self.estimator.tick(now - self.t0)
        self._settle_probe()
        for nbytes, rtt, server, sent in self.client.late_answers.settled():
            if rtt is None:  # the edge stopped listening: the frame never crossed in time
                self.estimator.lost(nbytes, LATE_LISTEN_S, server, sent_at=sent - self.t0)
            else:
                self.estimator.answered(nbytes, rtt, server, sent_at=sent - self.t0)
        estimates = self.estimator.snapshot()
        decision = self.controller.decide(now - self.t0, estimates, (now - captured) * 1e3)
        if self.adaptive and self._probe is None and self.controller.probe_due(now - self.t0):
            self._start_probe()
        if decision.config is None:
            return self._skipped(decision, estimates, captured)
        entry = decision.config
        self._configure(entry)
        load = self.estimator.device.value
        hedge = decision.fallback is not None and entry.config.remote
        prefer_local = hedge and prefers_local(entry, decision.fallback)
        late = decision.late_fallback
        if hedge:
            patience_s = (
                self.deadline_s if decision.patience_ms is None else min(self.deadline_s, decision.patience_ms / 1e3)
            )
            answer_by = captured + patience_s - HAND_OVER_S
            self.client.use_local(decision.fallback.config.input_size, decision.fallback.config.early_exit is not None)
            self.client.on_failure = "local"
        elif late is not None:
            head_s = entry.head_ms * load / 1e3
            answer_by = give_up_instant(captured, now + head_s, self.deadline_s, late.head_ms * load / 1e3)
            self.client.use_local(late.config.input_size, late.config.early_exit is not None)
            self.client.on_failure = self._on_failure
        else:  # nothing local fits: wait until the deadline (a long shot: the patience), then report a miss
            patience_s = self.deadline_s if decision.patience_ms is None else decision.patience_ms / 1e3
            answer_by = captured + min(self.deadline_s, patience_s)
            self.client.on_failure = "drop"
        began = time.perf_counter()
        result = self.client.detect(
            image, answer_by=answer_by if entry.config.remote else None, hedge=hedge, prefer_local=prefer_local
        )
        if result.mode == "error":  # no fallback fits: reported as missed, not lost
            result.mode, result.note = "timeout", f"missed the deadline, no local model fits: {result.error}"
            result.error = None
        self._learn(entry, result, began, answer_by)
        self._report_outcome(decision, result, captured)
        return self._annotate(result, decision, estimates, captured)

    def _report_outcome(self, decision, result: FrameResult, captured: float) -> None:
        """Tell the controller how a remote frame fared against its prediction (its recalibration)."""
        if decision.p_raw is None or result.extra.get("local_first"):
            return  # a local-first frame's answer may still come in time: not known yet
        if result.mode in ("split", "offload"):
            in_time = time.perf_counter() - captured <= self.deadline_s
        elif result.mode in ("fallback", "timeout"):
            in_time = False
        else:
            return  # an error says nothing about the link's timing
        self.controller.outcome(decision.p_raw, in_time)

    def _skipped(self, decision, estimates, captured: float) -> FrameResult:
        """A frame nothing could deliver in time: reported as such, and the device stays free."""
        frame_id = self.client.pipeline.new_frame_id()
        result = FrameResult(frame_id, "skipped", "-", "-", 0)
        result.note = decision.reason
        return self._annotate(result, decision, estimates, captured)

    def _annotate(self, result: FrameResult, decision, estimates, captured: float) -> FrameResult:
        latency_ms = (time.perf_counter() - captured) * 1e3
        met = result.mode not in ("skipped", "timeout", "error") and latency_ms <= self.deadline_s * 1e3
        result.extra |= {
            "decision": {**decision.as_dict(), "mode": result.mode},
            "estimates": estimates.as_dict(),
            "latency_ms": round(latency_ms, 2),
            "deadline_met": met,
        }
        return result

    # -- probing the link while running locally ------------------------------------------------------
    def _start_probe(self) -> None:
        def probe() -> None:
            rtt = self.client.probe(PROBE_PADDING, PROBE_TIMEOUT_S)
            if rtt is not None:  # None: still down; the next probe is due later
                self._probe_answers.append(rtt)

        self._probe = threading.Thread(target=probe, name="splitrt-probe", daemon=True)
        self._probe.start()

    def _settle_probe(self) -> None:
        if self._probe is not None and not self._probe.is_alive():
            self._probe = None
            while self._probe_answers:
                self.estimator.probe_answered(self._probe_answers.pop())

    def _configure(self, entry: ConfigProfile) -> None:
        c = entry.config
        if c.split == LOCAL:
            self.client.configure(None, "local", local_input_size=c.input_size, local_exit=c.early_exit is not None)
        else:
            self.client.configure(c.split, c.codec, c.width)

    def _learn(self, entry: ConfigProfile, result: FrameResult, began: float, answer_by: float) -> None:
        t = result.timings_ms
        if "head" in t:
            self.estimator.head_time(t["head"] + t.get("encode", 0.0), entry.head_ms)
        sent_at = began + (t.get("head", 0.0) + t.get("encode", 0.0)) / 1e3
        if result.mode in ("split", "offload") and "network" in t:
            server = t.get("server", 0.0) / 1e3
            rtt = t["network"] / 1e3 + server
            queue = t.get("server_queue", 0.0) / 1e3
            self.estimator.answered(result.wire_bytes, rtt, server, queue, sent_at=sent_at - self.t0)
        elif result.extra.get("local_first"):
            # Not late: its answer, in or on its way, is settled through the late answers; its bytes
            # may hold up the next frames meanwhile.
            self.estimator.awaiting(result.wire_bytes, sent_at - self.t0)
        elif result.mode in ("fallback", "timeout") and entry.config.remote:
            waited = max(1e-3, answer_by - sent_at)
            # The call stays open a while: its late answer (or its absence) judges the link then.
            self.estimator.timed_out(result.wire_bytes, waited, entry.tail_ms / 1e3, pending=True)
            self.estimator.awaiting(result.wire_bytes, sent_at - self.t0)


def load_profile_for(client: SplitClient, path: str | None, remeasure_s: float = 0.0) -> Profile:
    """The profile file (default: the one shipped for the model), optionally with head times re-measured here."""
    if path is None:
        from ..defaults import PROFILES_DIR

        shipped = PROFILES_DIR / f"{client.spec.arch}.json"
        if not shipped.is_file():
            raise FileNotFoundError(
                f"no profile ships for {client.spec.arch!r}; measure one with `splitrt profile --model "
                f"{client.spec.arch} --out profile.json` and pass --profile profile.json"
            )
        path = str(shipped)
    profile = Profile.load(path)
    if remeasure_s > 0:
        from ..adapt.profile import remeasure_heads
        from ..data.datasets import ShapesDetection

        images = [ShapesDetection("val", 4)[i][0] for i in range(4)]
        measured = remeasure_heads(profile, client.model, images, seconds=remeasure_s)
        drift = head_time_drift(profile, measured)
        if not 1 / DRIFT_WARNING <= drift <= DRIFT_WARNING:
            log.warning(
                "the profile %s has head times %.2fx of what this device takes now (median over %d configurations): "
                "it was timed on another or a %s machine; using the re-measured head times. Re-profile with "
                "`splitrt profile --model %s --out profile.json` for tails and bytes too.",
                path,
                1 / drift,
                len(profile.configs),
                "slower (loaded?)" if drift < 1 else "faster",
                client.spec.arch,
            )
        profile = measured
    return profile


#: Re-measured head times this far off the profile's (either way) are worth a warning.
DRIFT_WARNING = 1.5


def head_time_drift(profile: Profile, measured: Profile) -> float:
    """Median over configurations of re-measured / profiled head time (1: the profile fits this device)."""
    ratios = sorted(m.head_ms / p.head_ms for p, m in zip(profile.configs, measured.configs) if p.head_ms > 0)
    return ratios[len(ratios) // 2] if ratios else 1.0
