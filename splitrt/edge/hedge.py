"""Hedged frames: send the features, run a local model meanwhile, keep whichever result is ready in time.

Once a frame is out, the device would otherwise sit idle waiting for the
server.  A hedged frame uses that time to run a (cheaper) local model on the
same image.  The server's answer wins if it comes by the deadline (or before
the local model is done); otherwise the local result is delivered (mode
``fallback``) and the frame is never late because of the link.  When the
local model is the more accurate one (``prefer_local``) the roles swap.  The call is
not cancelled: its late answer still tells the edge how the link carried
the frame (``LateAnswers``).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from ..policy import LATE_ANSWER_S
from ..wire.protocol import DECODE_US, QUEUE_US, TAIL_US, WireError, parse_response
from .connection import describe_rpc_error
from .frames import FrameResult
from .pipeline import PendingFrame

if TYPE_CHECKING:
    from .client import SplitClient


@dataclass
class LateCall:
    """A frame whose answer missed the deadline; its round trip is still a link measurement."""

    call: grpc.Future
    sent: float
    nbytes: int
    received: list[float] = field(default_factory=list)


class LateAnswers:
    """Calls given up on; ``settled()`` hands over those answered since."""

    def __init__(self) -> None:
        self._calls: list[LateCall] = []

    def add(self, late: LateCall) -> None:
        self._calls.append(late)

    def cancel_all(self) -> None:
        """Stop listening (the client is closing): no call may outlive its channel."""
        for late in self._calls:
            late.call.cancel()
        self._calls = []

    def settled(self) -> list[tuple[int, float | None, float, float]]:
        """(bytes, rtt_s, server_s, sent) of calls finished since; rtt_s None: never answered (the call
        timed out); sent: when it went out (``time.perf_counter``)."""
        answered, pending = [], []
        for late in self._calls:
            if not late.call.done():
                pending.append(late)
                continue
            if late.call.exception() is not None:
                answered.append((late.nbytes, None, 0.0, late.sent))
                continue
            if late.received:
                try:
                    _, params = parse_response(late.call.result())
                except WireError:
                    continue
                server_s = sum(float(params.get(p, 0)) for p in (DECODE_US, QUEUE_US, TAIL_US)) / 1e6
                answered.append((late.nbytes, late.received[0] - late.sent, server_s, late.sent))
        self._calls = pending
        return answered


class LocalRun(threading.Thread):
    """The local model on a worker thread; ``stop()`` cuts the emulated slow-device wait short."""

    def __init__(self, client: SplitClient, item: PendingFrame, done: queue.Queue) -> None:
        super().__init__(name="splitrt-hedge", daemon=True)
        self.client, self.item, self.done = client, item, done
        self.cancel = threading.Event()
        self.outputs: dict | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        began = time.perf_counter()
        try:
            self.outputs = self.client.run_local_model(self.item.image, self.item.cut)
            self.client.pipeline.stretch(began, self.cancel, local=True, from_cut=self.item.cut is not None)
        except Exception as exc:  # reported through the frame's result, never lost
            self.error = exc
        self.seconds = time.perf_counter() - began
        self.done.put("local")


def detect_hedged(client: SplitClient, item: PendingFrame, answer_by: float, prefer_local: bool = False) -> FrameResult:
    """Send ``item`` and run the local model meanwhile; the server's answer if it comes in time.

    ``prefer_local``: the local model is the more accurate of the two (a cheap offload hedged
    with an exit on a slow device), so the answer is the safety net: the edge waits for the
    local result until ``answer_by`` and delivers the answer, already in hand, only if the
    local model is not done by then.
    """
    events: queue.Queue[str] = queue.Queue()
    late = LateCall(None, time.perf_counter(), item.result.wire_bytes)  # type: ignore[arg-type]
    item.sent = late.sent
    timeout = max(1e-3, answer_by - late.sent) + LATE_ANSWER_S
    late.call = client._stub.ModelInfer.future(item.request, timeout=timeout, metadata=client._metadata)
    late.call.add_done_callback(lambda _: (late.received.append(time.perf_counter()), events.put("remote")))
    local = LocalRun(client, item, events)
    local.start()
    client.pipeline.background = local  # the next frame waits for the device to be free
    refused: str | None = None
    answered = False  # the server's answer is in (prefer_local: kept while the local model runs)
    while True:
        local_ready = local.outputs is not None or local.error is not None
        past = time.perf_counter() >= answer_by
        if answered and (past or local.error is not None):  # the local model is too late, or failed
            local.cancel.set()
            return _answered(client, item, late)
        if local_ready and prefer_local and local.error is None:
            break  # the better result (in time, if the answer is in hand)
        if local_ready and (refused is not None or past):
            break
        wait = answer_by - time.perf_counter() if (local_ready or answered) else None
        try:
            event = events.get(timeout=None if wait is None else max(0.0, wait))
        except queue.Empty:
            continue
        if event == "remote":
            exc = late.call.exception()
            if exc is None:
                if not prefer_local:
                    local.cancel.set()
                    return _answered(client, item, late)
                answered = True
            else:
                refused = _describe(exc)
    if local.error is not None:  # neither result: say why, the frame is not lost
        why = f"local model failed: {local.error}; server: {refused or 'no answer in time'}"
        return client.pipeline.error(item, why)
    local_first = prefer_local and time.perf_counter() <= answer_by
    if refused is None:
        client.late_answers.add(late)  # answered or still listening: the answer measures the link
    result = item.result
    result.mode = "fallback"
    if local_first:
        result.note = "hedged: the local model is the more accurate and finished in time"
        result.extra["local_first"] = True
    else:
        result.note = f"hedged: {refused or 'no answer by the deadline'}; ran on the device"
    result.timings_ms.update({"local": local.seconds * 1e3, "total": (time.perf_counter() - item.started) * 1e3})
    client.counters["fallback"] += 1
    return client.pipeline.fill(result, local.outputs)


def _answered(client: SplitClient, item: PendingFrame, late: LateCall) -> FrameResult:
    result = client.pipeline.finish(item, late.call.result(), late.received[0])
    result.note = "hedged: the server answered first"
    return result


def _describe(exc: BaseException) -> str:
    return describe_rpc_error(exc)
