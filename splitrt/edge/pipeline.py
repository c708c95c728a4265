"""The per-frame work on the device: prefilter, head, encode, the request; local models; reading answers.

`FramePipeline` knows the model and how the next frames run (split, codec, width, which local
model), and nothing of the network: the client sends what it prepares, and hands back what
the server answered.  Every head stays loaded and codecs are cached, so a controller can
change the configuration per frame without a reload.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..codecs import CodecError, codec_kind, get_codec
from ..models.base import INPUT_SPLIT, FrameMeta, SplitError, SplitModel
from ..models.spec import ModelSpec
from ..wire import kserve_v2_pb2 as pb
from ..wire.protocol import BATCH_SIZE, DECODE_US, QUEUE_US, TAIL_US, WireError, build_request, parse_response
from .frames import FrameResult, result_from_outputs, to_image_tensor

_EMPTY_DETECTIONS = {
    "boxes": torch.zeros(0, 4),
    "scores": torch.zeros(0),
    "labels": torch.zeros(0, dtype=torch.int64),
}


#: ``codec="auto"``: the split's own codec (what its bottleneck was trained for, or the usual one).
AUTO_CODEC = "auto"


def default_split(model: SplitModel) -> str:
    """Where a model is split when the user does not say: its learned, entropy-coded bottleneck
    (the deepest cut, the middle of its rates), else a learned one, else an early cut."""
    branches = list(getattr(model, "branch_splits", ()))
    entropy = [s for s in branches if model.branch(s).entropy_bottleneck is not None and not model.branch(s).slimmable]
    for candidates in (entropy, branches):
        if candidates:
            deepest = max(model.split_points.index(s.split("/")[0]) for s in candidates if "/" in s)
            at_cut = sorted(s for s in candidates if model.split_points.index(s.split("/")[0]) == deepest)
            return at_cut[(len(at_cut) - 1) // 2]
    return model.split_points[min(2, len(model.split_points) - 1)]


def natural_codec(model: SplitModel, split: str) -> str:
    """The codec a split point is meant for: JPEG for the input, the branch's own for a bottleneck."""
    if split == INPUT_SPLIT:
        return "jpeg:90"
    if split in getattr(model, "branch_splits", ()):
        return "entropy" if model.branch(split).entropy_bottleneck is not None else "bottleneck-int8-zstd"
    return "int8-zstd"


@dataclass
class PendingFrame:
    """A frame prepared for the server: its result so far, the request, and what a local run needs."""

    result: FrameResult
    request: pb.ModelInferRequest
    image: torch.Tensor
    started: float
    sent: float = 0.0
    deadline: float = 0.0
    attempts: int = 0
    #: The tensor at the early exit's cut and the frame's metadata, when the head computed it on the way.
    cut: tuple[torch.Tensor, FrameMeta] | None = None


class FramePipeline:
    """One model on this device and how the next frames go through it."""

    def __init__(
        self,
        spec: ModelSpec,
        split: str | None,
        codec: str = AUTO_CODEC,
        width: float | None = None,
        prefilter: bool = False,
        prefilter_threshold: float | None = None,
        device_slowdown: float = 1.0,
        score_threshold: float = 0.0,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], not {score_threshold}")
        #: Detections under this score are left out of results (0: every detection the model returns).
        self.score_threshold = score_threshold
        self.spec = spec
        self.model = spec.build()
        self._codecs: dict[tuple[str, str], Any] = {}
        self.local_input_size: int | None = None
        self.local_exit = False
        self.configure(split, codec, width)
        if prefilter and getattr(self.model, "prefilter", None) is None:
            raise SplitError(f"model {spec.name!r} has no prefilter")
        self.prefilter = prefilter
        self.prefilter_threshold = prefilter_threshold
        if device_slowdown < 1.0:
            raise ValueError("device_slowdown stretches on-device compute; it must be >= 1")
        #: Experiments only: make every on-device computation take this many times longer, to
        #: emulate a weaker device than the one running (the simulator's --edge-slowdown).
        self.device_slowdown = device_slowdown
        self._fastest: dict[tuple, float] = {}
        #: A hedged frame's local model, maybe still running: the next frame waits for the device.
        self.background: threading.Thread | None = None
        self.session_id = secrets.randbits(62)
        self.fingerprint = self.model.fingerprint()
        self.counters = {
            "server": 0,
            "local": 0,
            "fallback": 0,
            "dropped": 0,
            "resent": 0,
            "reconnects": 0,
            "prefiltered": 0,
            "width_switches": 0,
        }
        self.next_id = 0

    def fill(self, result: FrameResult, outputs: dict) -> FrameResult:
        """A result's detections (those at or above ``score_threshold``) and the model's label names."""
        result.class_names = self.model.class_names
        return result_from_outputs(result, outputs, self.score_threshold)

    def new_frame_id(self) -> int:
        """The id of a frame that never reaches the head (skipped): ids stay one per frame."""
        self.next_id += 1
        return self.next_id - 1

    def configure(
        self,
        split: str | None,
        codec: str,
        width: float | None = None,
        local_input_size: int | None = None,
        local_exit: bool = False,
    ) -> None:
        """Choose how the next frames run: split point, codec, width, or local (``codec="local"``).

        Every head stays loaded and codecs are cached, so the adaptive controller can change
        this per frame without a reload.  ``local_input_size`` and ``local_exit`` say which
        local model runs (here, and for fallbacks): the whole model at that input size, or
        the model's early exit.
        """
        if split is None:
            image = codec != AUTO_CODEC and codec_kind(codec) == "image"
            split = INPUT_SPLIT if image else default_split(self.model)
        self.model.check_split(split)
        if codec == AUTO_CODEC:
            codec = natural_codec(self.model, split)
        key = (codec, split)
        if key not in self._codecs:
            candidate = get_codec(codec, self.model, split)
            if candidate.kind == "image" and split != INPUT_SPLIT:
                raise CodecError(f"image codec {codec!r} sends the input image; use split 'input', not {split!r}")
            if candidate.kind == "features" and split == INPUT_SPLIT:
                raise CodecError(f"feature codec {codec!r} needs a split after 'input'; use an image codec to offload")
            self._codecs[key] = candidate
        slim = None
        if split in getattr(self.model, "branch_splits", ()) and self.model.branch(split).slimmable:
            slim = self.model.branch(split)
            width = width if width is not None else slim.widths[-1]
        self.model.check_width(split, width)  # the model's rules, the same the server applies
        if slim is not None:
            slim.set_width(width)
        self.codec, self.split, self._slim = self._codecs[key], split, slim
        self.mode = {"local": "local", "image": "offload", "features": "split"}[self.codec.kind]
        self.use_local(local_input_size, local_exit)

    def use_local(self, input_size: int | None = None, early_exit: bool = False) -> None:
        """The local model for local frames and fallbacks: the whole model at ``input_size``, or the early exit."""
        if early_exit and getattr(self.model, "early_exit", None) is None:
            raise SplitError(f"model {self.spec.name!r} has no early exit")
        self.local_input_size, self.local_exit = input_size, early_exit

    def run_local_model(self, image: torch.Tensor, cut: tuple[torch.Tensor, FrameMeta] | None = None) -> dict:
        """The chosen local model's detections; the early exit starts from ``cut`` when the head left it."""
        with torch.inference_mode():
            if self.local_exit:
                return self.model.exit_from_cut(*cut) if cut is not None else self.model.exit_detect(image)
            with self.model.at_input_size(self.local_input_size):
                return self.model.full(image)

    @property
    def width(self) -> float | None:
        return None if self._slim is None else self._slim.width

    def set_width(self, width: float) -> None:
        """Change how many latent channels the next frames send: a value, no reload."""
        if self._slim is None:
            raise SplitError(f"split {self.split!r} is not slimmable")
        if width != self._slim.width:
            self._slim.set_width(width)
            self.counters["width_switches"] += 1

    def wait_for_device(self) -> None:
        """One computation at a time on the device: wait for a hedged frame's local model."""
        if self.background is not None:
            self.background.join()
            self.background = None

    def prepare(self, image: Any) -> PendingFrame | FrameResult:
        """A frame ready to send, or its result when it needs no server (local, prefiltered)."""
        self.wait_for_device()
        frame_id = self.new_frame_id()
        started = time.perf_counter()
        tensor = to_image_tensor(image)
        result = FrameResult(frame_id, self.mode, self.split, self.codec.name, 0, width=self.width)
        with torch.inference_mode():
            if self.prefilter and self.codec.kind == "local":  # no head: the prefilter alone
                threshold = self._prefilter_threshold()
                score = result.prefilter_score = self.model.prefilter_score(tensor)
                if score < threshold:
                    return self._prefiltered(result, score, threshold, started)
            if self.codec.kind == "local":
                outputs = self.run_local_model(tensor)
                self.stretch(started, local=True)
                result.timings_ms = {"head": _ms(started), "total": _ms(started)}
                result.split = "local"
                self.counters["local"] += 1
                return self.fill(result, outputs)
            threshold = self._prefilter_threshold() if self.prefilter else None
            # One pass over the layers head, prefilter and early exit share; the exit's input is kept
            # for a hedged frame, whose exit then needs only its own layers.
            head = self.model.run_head(tensor, self.split, prefilter=threshold, keep_cut=self.local_exit)
            if threshold is not None:
                result.prefilter_score = head.score
                if not head.kept:
                    return self._prefiltered(result, head.score, threshold, started)
            features, meta = head.features, head.meta
            cut = (head.cut, meta) if head.cut is not None else None
        head_done = time.perf_counter()
        payload = self.codec.encode(features)
        self.stretch(started)
        encoded = time.perf_counter()
        request = build_request(
            self.spec.name,
            frame_id,
            payload,
            self.codec.name,
            self.split,
            meta,
            self.fingerprint,
            self.session_id,
            width=self.width,
        )
        result.wire_bytes = len(payload)
        result.timings_ms = {"head": (head_done - started) * 1e3, "encode": (encoded - head_done) * 1e3}
        return PendingFrame(result, request, tensor, started, cut=cut)

    def _prefilter_threshold(self) -> float:
        threshold = self.prefilter_threshold
        return float(self.model.prefilter.threshold) if threshold is None else threshold

    def _prefiltered(self, result: FrameResult, score: float, threshold: float, started: float) -> FrameResult:
        result.prefilter_score = score
        result.mode, result.note = "prefiltered", f"prefilter score {score:.3f} < threshold {threshold:.3f}"
        result.timings_ms = {"prefilter": _ms(started), "total": _ms(started)}
        self.counters["prefiltered"] += 1
        return self.fill(result, _EMPTY_DETECTIONS)

    def run_locally(self, item: PendingFrame, reason: str) -> FrameResult:
        began = time.perf_counter()
        outputs = self.run_local_model(item.image)
        self.stretch(began, local=True)
        result = item.result
        result.mode, result.note = "fallback", f"ran on the device: {reason}"
        result.timings_ms = {"local": _ms(began), "total": _ms(item.started)}
        self.counters["fallback"] += 1
        return self.fill(result, outputs)

    def stretch(
        self, began: float, cancel: threading.Event | None = None, local: bool = False, from_cut: bool = False
    ) -> None:
        """Emulate a slower device: add (slowdown - 1) x the fastest time this work has taken here.

        Using the fastest time, not this one, keeps contention on this machine an additive
        delay (as it would be on the emulated device) instead of multiplying it.  ``local``:
        the work was the local model (a fallback), not this configuration's head (``from_cut``:
        an early exit that started from the head's tensor).  ``cancel``
        cuts the wait short (a hedged local model whose frame the server answered).
        """
        if self.device_slowdown > 1.0:
            if local:
                key = ("local", self.local_input_size, self.local_exit, from_cut)
            else:
                key = (self.split, self.codec.name, self.width)
            fastest = min(self._fastest.get(key, float("inf")), time.perf_counter() - began)
            self._fastest[key] = fastest
            delay = (self.device_slowdown - 1.0) * fastest
            if cancel is None:
                time.sleep(delay)
            else:
                cancel.wait(delay)

    def error(self, item: PendingFrame, reason: str) -> FrameResult:
        item.result.mode, item.result.error = "error", reason
        self.counters["dropped"] += 1
        return item.result

    def finish(self, item: PendingFrame, response: pb.ModelInferResponse, received: float) -> FrameResult:
        """The result of a frame the server answered (an error result if the answer is malformed)."""
        result = item.result
        try:
            outputs, params = parse_response(response)
        except WireError as exc:
            return self.error(item, f"malformed response: {exc}")
        server_ms = {
            k: float(params.get(p, 0)) / 1e3 for k, p in (("decode", DECODE_US), ("queue", QUEUE_US), ("tail", TAIL_US))
        }
        server_total = sum(server_ms.values())
        rtt = (received - item.sent) * 1e3
        result.timings_ms.update(
            {
                "network": max(0.0, rtt - server_total),
                "server": server_total,
                **{f"server_{k}": v for k, v in server_ms.items()},
                "total": (received - item.started) * 1e3,
            }
        )
        if BATCH_SIZE in params:
            result.extra["server_batch"] = int(params[BATCH_SIZE])
        if item.attempts > 1:
            result.note = f"answered after {item.attempts} attempts"
        self.counters["server"] += 1
        return self.fill(result, outputs)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1e3
