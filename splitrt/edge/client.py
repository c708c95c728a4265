"""The Python client: run the head here, the tail on a server, get detections back.

with splitrt.connect("127.0.0.1:8001", model="fasterrcnn_mobilenet_v3_large_320_fpn",
                     split="features.3", codec="int8-zstd") as client:
    result = client.detect(image)           # one frame, one round trip
    for result in client.stream(frames):    # pipelined, results in frame order
        ...
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import torch

from ..catalog import check_names
from ..codecs import CodecError, codec_kind, get_codec
from ..models.base import INPUT_SPLIT, FrameMeta, SplitError, SplitModel
from ..models.spec import ModelSpec, parse_model_flag
from ..wire import kserve_v2_pb2 as pb
from ..wire import kserve_v2_pb2_grpc as pb_grpc
from ..wire.protocol import (
    BATCH_SIZE,
    DECODE_US,
    QUEUE_US,
    TAIL_US,
    WireError,
    build_probe,
    build_request,
    parse_response,
)
from .connection import Backoff, ConnectionOptions, call_metadata, open_channel
from .frames import FrameResult, result_from_outputs, to_image_tensor
from .hedge import LATE_ANSWER_S, LateAnswers, LateCall, detect_hedged

log = logging.getLogger("splitrt.edge")

_EMPTY_DETECTIONS = {
    "boxes": torch.zeros(0, 4),
    "scores": torch.zeros(0),
    "labels": torch.zeros(0, dtype=torch.int64),
}


class FrameFailed(RuntimeError):
    """A frame the server refused or never answered; the message says why."""


def default_split(model: SplitModel) -> str:
    """An early cut: the natural place for a learned bottleneck."""
    return model.split_points[min(2, len(model.split_points) - 1)]


@dataclass
class _Pending:
    result: FrameResult
    request: pb.ModelInferRequest
    image: torch.Tensor
    started: float
    sent: float = 0.0
    deadline: float = 0.0
    attempts: int = 0
    #: The tensor at the early exit's cut and the frame's metadata, when the head computed it on the way.
    cut: tuple[torch.Tensor, FrameMeta] | None = None


class SplitClient:
    """Runs a model's head on this machine and its tail on a splitrt server.

    ``codec="local"`` runs the whole model here and sends nothing; an image
    codec (``jpeg``, ``png``, ``webp``, ``raw``) with ``split="input"`` sends
    the frame itself (full offload).

    When the server fails (the stream breaks, a frame times out), frames in
    flight are resent on a new stream after an exponential backoff, up to
    ``max_resends`` times; after that ``on_failure="local"`` runs them on
    this device (mode ``fallback``) and ``"drop"`` reports them as errors.
    Every frame comes back exactly once either way.
    """

    def __init__(
        self,
        target: str,
        model: str | ModelSpec,
        split: str | None = None,
        codec: str = "int8-zstd",
        *,
        weights: str | None = None,
        model_options: dict[str, Any] | None = None,
        max_in_flight: int = 4,
        timeout_s: float = 30.0,
        on_failure: str = "local",
        max_resends: int = 2,
        connection: ConnectionOptions | None = None,
        width: float | None = None,
        prefilter: bool = False,
        prefilter_threshold: float | None = None,
        device_slowdown: float = 1.0,
    ) -> None:
        if on_failure not in ("local", "drop"):
            raise ValueError(f"on_failure must be 'local' or 'drop', not {on_failure!r}")
        self.spec = model if isinstance(model, ModelSpec) else parse_model_flag(model, weights, model_options)
        check_names(self.spec.arch, split, codec)  # a typo fails now, not after the model is built
        self.model = self.spec.build()
        self._codecs: dict[tuple[str, str], Any] = {}
        self.local_input_size: int | None = None
        self.local_exit = False
        self.configure(split, codec, width)
        if prefilter and getattr(self.model, "prefilter", None) is None:
            raise SplitError(f"model {self.spec.name!r} has no prefilter")
        self.prefilter = prefilter
        self.prefilter_threshold = prefilter_threshold
        if device_slowdown < 1.0:
            raise ValueError("device_slowdown stretches on-device compute; it must be >= 1")
        #: Experiments only: make every on-device computation take this many times longer, to
        #: emulate a weaker device than the one running (the simulator's --edge-slowdown).
        self.device_slowdown = device_slowdown
        self._fastest: dict[tuple, float] = {}
        self._background: threading.Thread | None = None  # a hedged frame's local model, maybe still running
        #: Hedged frames given up on whose answers may still come (link measurements for the edge).
        self.late_answers = LateAnswers()
        self.target = target
        self.max_in_flight = max(1, max_in_flight)
        self.timeout_s = timeout_s
        self.on_failure = on_failure
        self.max_resends = max_resends
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
        self._next_id = 0
        connection = connection or ConnectionOptions()
        self._metadata = call_metadata(connection)
        self._channel = open_channel(target, connection)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._backoff = Backoff()

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
            split = INPUT_SPLIT if codec_kind(codec) == "image" else default_split(self.model)
        self.model.check_split(split)
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
            slim.set_width(width if width is not None else slim.widths[-1])
        elif width is not None:
            raise SplitError(f"split {split!r} is not slimmable; it has no width to set")
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

    # -- context management -------------------------------------------------------
    def __enter__(self) -> SplitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.late_answers.cancel_all()
        if self._background is not None:  # a hedged frame's local model, maybe still running
            self._background.join()
            self._background = None
        self._channel.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the server reports this model ready (or raise TimeoutError)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            try:
                request = pb.ModelReadyRequest(name=self.spec.name)
                if self._stub.ModelReady(request, timeout=2.0, metadata=self._metadata).ready:
                    return
                last = "model not ready"
            except grpc.RpcError as exc:
                last = describe_rpc_error(exc)
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise PermissionError(f"{self.target} refused this client: {last}") from exc
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"model {self.spec.name!r} not ready on {self.target} after {timeout_s:.0f}s ({last})"
                )
            time.sleep(0.2)

    def probe(self, padding: int, timeout_s: float) -> float | None:
        """Round-trip seconds of a ``padding``-byte link probe, or None if it got no answer in time."""
        request = build_probe(self.spec.name, f"probe-{self.session_id}", padding)
        sent = time.perf_counter()
        try:
            self._stub.ModelInfer(request, timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError:
            return None
        return time.perf_counter() - sent

    # -- one frame ------------------------------------------------------------------
    def detect(self, image: Any, answer_by: float | None = None, hedge: bool = False) -> FrameResult:
        """Process one frame with a unary call.

        ``answer_by`` (a ``time.perf_counter()`` instant) overrides the timeout: an
        unanswered frame is abandoned then and, with ``on_failure="local"``, run on the
        device (what the adaptive edge uses to still meet a deadline).  With ``hedge``
        the local model (at ``local_input_size``) runs while the frame is out and its
        result is delivered if the server has not answered by ``answer_by``
        (``splitrt.edge.hedge``).

        Raises FrameFailed when the server refuses the frame, or cannot be
        reached and ``on_failure`` is ``"drop"``.
        """
        prepared = self._prepare(image)
        if isinstance(prepared, FrameResult):
            return prepared
        if hedge and answer_by is not None:
            return detect_hedged(self, prepared, answer_by)
        if answer_by is not None:
            return self._detect_until(prepared, answer_by)
        prepared.sent = time.perf_counter()
        try:
            response = self._stub.ModelInfer(prepared.request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            return self._unanswered(prepared, describe_rpc_error(exc), _is_transport_failure(exc))
        return self._answered(prepared, response, time.perf_counter())

    def _unanswered(self, prepared: _Pending, why: str, may_run_here: bool) -> FrameResult:
        """A unary frame without an answer: run here (``on_failure="local"`` and ``may_run_here``) or raise."""
        reason = f"frame {prepared.result.frame_id}: {why}"
        if may_run_here and self.on_failure == "local":
            return self._run_locally(prepared, reason)
        self.counters["dropped"] += 1
        raise FrameFailed(reason)

    def _answered(self, prepared: _Pending, response, received: float) -> FrameResult:
        result = self._finish(prepared, response, received)
        if result.error:
            raise FrameFailed(result.error)
        return result

    def _detect_until(self, prepared: _Pending, answer_by: float) -> FrameResult:
        """One frame that must be answered by ``answer_by``; after that the call stays open a while
        (``late_answers``): its late answer still measures the link, as in the simulator."""
        late = LateCall(None, time.perf_counter(), prepared.result.wire_bytes)  # type: ignore[arg-type]
        prepared.sent = late.sent
        timeout = max(1e-3, answer_by - late.sent) + LATE_ANSWER_S
        late.call = self._stub.ModelInfer.future(prepared.request, timeout=timeout, metadata=self._metadata)
        late.call.add_done_callback(lambda _: late.received.append(time.perf_counter()))
        try:
            response = late.call.result(timeout=max(1e-3, answer_by - time.perf_counter()))
        except grpc.FutureTimeoutError:
            self.late_answers.add(late)
            return self._unanswered(prepared, "no answer by the deadline", True)
        except grpc.RpcError as exc:
            return self._unanswered(prepared, describe_rpc_error(exc), _is_transport_failure(exc))
        return self._answered(prepared, response, late.received[0] if late.received else time.perf_counter())

    # -- many frames ----------------------------------------------------------------
    def stream(self, frames: Iterable[Any]) -> Iterator[FrameResult]:
        """Pipeline frames over ModelStreamInfer; yields one result per frame, in frame order.

        At most ``max_in_flight`` frames await an answer.  A refused frame is
        yielded with ``mode="error"`` and the server's reason; a broken stream
        is reopened (with backoff) and its frames resent or handled as
        ``on_failure`` says.
        """
        state = _StreamState()
        try:
            for image in frames:
                while len(state.pending) + len(state.retry) >= self.max_in_flight:
                    self._progress(state, block=True)
                prepared = self._prepare(image)
                if isinstance(prepared, FrameResult):
                    state.order.append(prepared.frame_id)
                    state.done[prepared.frame_id] = prepared
                else:
                    state.order.append(prepared.result.frame_id)
                    state.retry.append(prepared)
                self._progress(state, block=False)
                yield from state.flush()
            while state.pending or state.retry:
                self._progress(state, block=True)
            yield from state.flush()
        finally:  # also when the caller stops early: no call or thread is left behind
            if state.session is not None:
                state.session.end()

    def _progress(self, state: _StreamState, block: bool) -> None:
        """Send what waits to be sent, then handle answers (waiting for one if ``block``)."""
        if state.retry:
            due = max(state.resend_at, state.reconnect_at if state.session is None else 0.0)
            if time.monotonic() < due:
                if state.pending:  # answers may come meanwhile
                    self._collect(state, block)
                    return
                if not block:
                    return
                time.sleep(max(0.0, due - time.monotonic()))
            if state.session is not None and not state.pending and state.session.finished.is_set():
                state.session.end()  # it ended while idle: do not send frames into a dead call
                state.session = None
            if state.session is None:
                state.session = _StreamSession(self._stub, self._metadata)
                if state.failed_before:
                    self.counters["reconnects"] += 1
            while state.retry:
                item = state.retry.pop(0)
                item.sent = time.perf_counter()
                item.deadline = item.sent + self.timeout_s
                item.attempts += 1
                state.pending[item.request.id] = item
                state.session.send(item.request)
        if state.pending:
            self._collect(state, block)

    def _collect(self, state: _StreamState, block: bool) -> None:
        session = state.session
        while state.pending:
            timeout = max(0.0, min(p.deadline for p in state.pending.values()) - time.perf_counter())
            try:
                kind, when, payload = session.events.get(timeout=timeout) if block else session.events.get_nowait()
            except queue.Empty:
                if block:
                    self._expire(state)
                return
            if kind == "response":
                item = state.pending.pop(payload.infer_response.id, None)
                if item is None:
                    log.debug("late or unknown response for frame %r ignored", payload.infer_response.id)
                    continue
                if not payload.error_message:
                    self._backoff.reset()
                if payload.error_message.startswith(_RETRYABLE):
                    # The server is alive but cannot take it yet (loading): resend after a pause.
                    if state.resend_at <= time.monotonic():  # one pause per wave of refusals, not per frame
                        state.resend_at = time.monotonic() + self._backoff.next_delay()
                    self._give_up_or_retry(state, item, f"server refused frame: {payload.error_message}")
                elif payload.error_message:
                    self._record(state, self._error(item, f"server refused frame: {payload.error_message}"))
                else:
                    self._record(state, self._finish(item, payload.infer_response, when))
                if block:
                    return
            else:
                reason = (
                    f"stream to {self.target} broke: {describe_rpc_error(payload)}"
                    if kind == "failed"
                    else f"stream to {self.target} closed before the frame was answered"
                )
                self._stream_failed(state, reason)
                return

    def _stream_failed(self, state: _StreamState, reason: str) -> None:
        log.warning("%s", reason)
        state.session.end()
        state.session = None
        state.failed_before = True
        state.reconnect_at = time.monotonic() + self._backoff.next_delay()
        for item in sorted(state.pending.values(), key=lambda p: p.result.frame_id):
            self._give_up_or_retry(state, item, reason)
        state.pending.clear()

    def _give_up_or_retry(self, state: _StreamState, item: _Pending, reason: str) -> None:
        if item.attempts <= self.max_resends:
            self.counters["resent"] += 1
            state.retry.append(item)
        elif self.on_failure == "local":
            self._record(state, self._run_locally(item, f"{reason} (after {item.attempts} attempts)"))
        else:
            self._record(state, self._error(item, f"dropped after {item.attempts} attempts: {reason}"))

    def _expire(self, state: _StreamState) -> None:
        """Frames past their deadline: the server is too slow or gone; treat it as a broken stream."""
        now = time.perf_counter()
        if any(p.deadline <= now for p in state.pending.values()):
            self._stream_failed(state, f"no response from {self.target} within {self.timeout_s:.1f}s")

    def _record(self, state: _StreamState, result: FrameResult) -> None:
        state.done[result.frame_id] = result

    # -- the per-frame work -----------------------------------------------------------
    def _prepare(self, image: Any) -> _Pending | FrameResult:
        if self._background is not None:  # one computation at a time on the device
            self._background.join()
            self._background = None
        frame_id = self._next_id
        self._next_id += 1
        started = time.perf_counter()
        tensor = to_image_tensor(image)
        result = FrameResult(frame_id, self.mode, self.split, self.codec.name, 0, width=self.width)
        with torch.inference_mode():
            head_output = None  # (features, meta, the early exit's input when the head passed through it)
            if self.prefilter:
                threshold = self.prefilter_threshold
                threshold = float(self.model.prefilter.threshold) if threshold is None else threshold
                if self.codec.kind == "local":
                    score = self.model.prefilter_score(tensor)
                else:  # one pass over the layers the head and the prefilter share
                    score, head_output = self.model.prefiltered_head(tensor, self.split, threshold)
                result.prefilter_score = score
                if score < threshold:
                    result.mode, result.note = "prefiltered", f"prefilter score {score:.3f} < threshold {threshold:.3f}"
                    result.timings_ms = {"prefilter": _ms(started), "total": _ms(started)}
                    self.counters["prefiltered"] += 1
                    return result_from_outputs(result, _EMPTY_DETECTIONS)
            if self.codec.kind == "local":
                outputs = self.run_local_model(tensor)
                self._stretch(started, local=True)
                result.timings_ms = {"head": _ms(started), "total": _ms(started)}
                result.split = "local"
                self.counters["local"] += 1
                return result_from_outputs(result, outputs)
            if head_output is None:
                if hasattr(self.model, "head_keeping_cut"):
                    head_output = self.model.head_keeping_cut(tensor, self.split)
                else:
                    head_output = (*self.model.head(tensor, self.split), None)
            features, meta, cut_features = head_output
            # Kept for a hedged frame's early exit, which then needs only its own layers.
            cut = (cut_features, meta) if cut_features is not None and self.local_exit else None
        head_done = time.perf_counter()
        payload = self.codec.encode(features)
        self._stretch(started)
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
        return _Pending(result, request, tensor, started, cut=cut)

    def _run_locally(self, item: _Pending, reason: str) -> FrameResult:
        began = time.perf_counter()
        outputs = self.run_local_model(item.image)
        self._stretch(began, local=True)
        result = item.result
        result.mode, result.note = "fallback", f"ran on the device: {reason}"
        result.timings_ms = {"local": _ms(began), "total": _ms(item.started)}
        self.counters["fallback"] += 1
        return result_from_outputs(result, outputs)

    def _stretch(
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

    def _error(self, item: _Pending, reason: str) -> FrameResult:
        item.result.mode, item.result.error = "error", reason
        self.counters["dropped"] += 1
        return item.result

    def _finish(self, item: _Pending, response: pb.ModelInferResponse, received: float) -> FrameResult:
        result = item.result
        try:
            outputs, params = parse_response(response)
        except WireError as exc:
            return self._error(item, f"malformed response: {exc}")
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
        return result_from_outputs(result, outputs)


@dataclass
class _StreamState:
    """Bookkeeping of one ``stream()`` call."""

    session: _StreamSession | None = None
    reconnect_at: float = 0.0
    #: Refused-for-now frames (UNAVAILABLE, RESOURCE_EXHAUSTED) wait in ``retry`` until then.
    resend_at: float = 0.0
    failed_before: bool = False

    def __post_init__(self) -> None:
        self.pending: dict[str, _Pending] = {}
        self.retry: list[_Pending] = []
        self.done: dict[int, FrameResult] = {}
        self.order: list[int] = []

    def flush(self) -> Iterator[FrameResult]:
        while self.order and self.order[0] in self.done:
            yield self.done.pop(self.order.pop(0))


class _StreamSession:
    """One ModelStreamInfer call: a request queue in, a receiver thread out."""

    _END = object()

    def __init__(self, stub: pb_grpc.GRPCInferenceServiceStub, metadata: tuple = ()) -> None:
        self._requests: queue.Queue = queue.Queue()
        self.events: queue.Queue = queue.Queue()
        self.finished = threading.Event()
        self._call = stub.ModelStreamInfer(iter(self._requests.get, self._END), metadata=metadata)
        self._thread = threading.Thread(target=self._receive, name="splitrt-stream-rx", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        try:
            for response in self._call:
                self.events.put(("response", time.perf_counter(), response))
            self.events.put(("closed", time.perf_counter(), None))
        except grpc.RpcError as exc:
            self.events.put(("failed", time.perf_counter(), exc))
        finally:
            self.finished.set()

    def send(self, request: pb.ModelInferRequest) -> None:
        self._requests.put(request)

    def close(self) -> None:
        self._requests.put(self._END)

    def cancel(self) -> None:
        self._call.cancel()

    def end(self) -> None:
        """Close the request side (releasing gRPC's sender thread) and cancel the call."""
        self.close()
        self.cancel()


#: Stream refusals that mean "not now" rather than "never" (a restarted server still loading the model):
#: the frame is resent after a backoff.  RESOURCE_EXHAUSTED (over the rate limit, queues full) is the
#: server asking this client to slow down: reported with the frame, not resent at once.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE.name + ":",)


def _is_transport_failure(exc: grpc.RpcError) -> bool:
    return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def describe_rpc_error(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1e3
