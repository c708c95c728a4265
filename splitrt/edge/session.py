"""Streaming frames over ModelStreamInfer: one call at a time, reopened and resent when it breaks.

`FrameStream` keeps every frame accounted for: each one is answered, resent (after a
backoff, on a new call) or handled as the client's ``on_failure`` says, exactly once, and
results come out in frame order.  `StreamSession` is one gRPC call: a request queue in,
a receiver thread out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from ..wire import kserve_v2_pb2 as pb
from ..wire import kserve_v2_pb2_grpc as pb_grpc
from .connection import Backoff, describe_rpc_error
from .frames import FrameResult
from .pipeline import FramePipeline, PendingFrame

log = logging.getLogger("splitrt.edge")

#: Stream refusals that mean "not now" rather than "never" (a restarted server still loading the model):
#: the frame is resent after a backoff.  RESOURCE_EXHAUSTED (over the rate limit, queues full) is the
#: server asking this client to slow down: reported with the frame, not resent at once.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE.name + ":",)




class FrameStream:
    """One ``stream()`` of a client: at most ``max_in_flight`` frames await an answer."""

    def __init__(
        self,
        pipeline: FramePipeline,
        stub: pb_grpc.GRPCInferenceServiceStub,
        metadata: tuple,
        target: str,
        backoff: Backoff,
        *,
        max_in_flight: int,
        timeout_s: float,
        max_resends: int,
        on_failure: str,
    ) -> None:
        self.pipeline = pipeline
        self.counters = pipeline.counters
        self._stub, self._metadata, self.target, self._backoff = stub, metadata, target, backoff
        self.max_in_flight, self.timeout_s = max_in_flight, timeout_s
        self.max_resends, self.on_failure = max_resends, on_failure

    def run(self, frames: Iterable[Any]) -> Iterator[FrameResult]:
        state = StreamState()
        try:
            for image in frames:
                while len(state.pending) + len(state.retry) >= self.max_in_flight:
                    self._progress(state, block=True)
                prepared = self.pipeline.prepare(image)
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

    def _progress(self, state: StreamState, block: bool) -> None:
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
                state.session = StreamSession(self._stub, self._metadata)
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

    def _collect(self, state: StreamState, block: bool) -> None:
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
                    self._record(state, self.pipeline.error(item, f"server refused frame: {payload.error_message}"))
                else:
                    self._record(state, self.pipeline.finish(item, payload.infer_response, when))
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

    def _stream_failed(self, state: StreamState, reason: str) -> None:
        log.warning("%s", reason)
        state.session.end()
        state.session = None
        state.failed_before = True
        state.reconnect_at = time.monotonic() + self._backoff.next_delay()
        for item in sorted(state.pending.values(), key=lambda p: p.result.frame_id):
            self._give_up_or_retry(state, item, reason)
        state.pending.clear()

    def _give_up_or_retry(self, state: StreamState, item: PendingFrame, reason: str) -> None:
        if item.attempts <= self.max_resends:
            self.counters["resent"] += 1
            state.retry.append(item)
        elif self.on_failure == "local":
            self._record(state, self.pipeline.run_locally(item, f"{reason} (after {item.attempts} attempts)"))
        else:
            self._record(state, self.pipeline.error(item, f"dropped after {item.attempts} attempts: {reason}"))

    def _expire(self, state: StreamState) -> None:
        """Frames past their deadline: the server is too slow or gone; treat it as a broken stream."""
        now = time.perf_counter()
        if any(p.deadline <= now for p in state.pending.values()):
            self._stream_failed(state, f"no response from {self.target} within {self.timeout_s:.1f}s")

    def _record(self, state: StreamState, result: FrameResult) -> None:
        state.done[result.frame_id] = result


@dataclass
class StreamState:
    """Bookkeeping of one ``stream()`` call."""

    session: StreamSession | None = None
    reconnect_at: float = 0.0
    #: Refused-for-now frames (UNAVAILABLE, RESOURCE_EXHAUSTED) wait in ``retry`` until then.
    resend_at: float = 0.0
    failed_before: bool = False

    def __post_init__(self) -> None:
        self.pending: dict[str, PendingFrame] = {}
        self.retry: list[PendingFrame] = []
        self.done: dict[int, FrameResult] = {}
        self.order: list[int] = []

    def flush(self) -> Iterator[FrameResult]:
        while self.order and self.order[0] in self.done:
            yield self.done.pop(self.order.pop(0))


class StreamSession:
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
