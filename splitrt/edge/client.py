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

from ..codecs import CodecError, codec_kind, get_codec
from ..models.base import INPUT_SPLIT, SplitModel
from ..models.spec import ModelSpec, parse_model_flag
from ..wire import kserve_v2_pb2 as pb
from ..wire import kserve_v2_pb2_grpc as pb_grpc
from ..wire.protocol import DECODE_US, QUEUE_US, TAIL_US, WireError, build_request, parse_response
from .frames import FrameResult, result_from_outputs, to_image_tensor

log = logging.getLogger("splitrt.edge")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class FrameFailed(RuntimeError):
    """A frame the server refused or never answered; the message says why."""


def default_split(model: SplitModel) -> str:
    """An early cut: the natural place for a learned bottleneck."""
    return model.split_points[min(2, len(model.split_points) - 1)]


@dataclass
class _Pending:
    result: FrameResult
    request: pb.ModelInferRequest
    started: float
    sent: float = 0.0
    deadline: float = 0.0


class SplitClient:
    """Runs a model's head on this machine and its tail on a splitrt server.

    ``codec="local"`` runs the whole model here and sends nothing; an image
    codec (``jpeg``, ``png``, ``webp``, ``raw``) with ``split="input"`` sends
    the frame itself (full offload).
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
    ) -> None:
        self.spec = model if isinstance(model, ModelSpec) else parse_model_flag(model, weights, model_options)
        self.model = self.spec.build()
        if split is None:
            split = INPUT_SPLIT if codec_kind(codec) == "image" else default_split(self.model)
        self.model.check_split(split)
        self.codec = get_codec(codec, self.model, split)
        if self.codec.kind == "image" and split != INPUT_SPLIT:
            raise CodecError(f"image codec {codec!r} sends the input image; use split 'input', not {split!r}")
        if self.codec.kind == "features" and split == INPUT_SPLIT:
            raise CodecError(f"feature codec {codec!r} needs a split after 'input'; use an image codec to offload")
        self.split = split
        self.mode = {"local": "local", "image": "offload", "features": "split"}[self.codec.kind]
        self.target = target
        self.max_in_flight = max(1, max_in_flight)
        self.timeout_s = timeout_s
        self.session_id = secrets.randbits(62)
        self.fingerprint = self.model.fingerprint()
        self._next_id = 0
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    # -- context management -------------------------------------------------------
    def __enter__(self) -> SplitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the server reports this model ready (or raise TimeoutError)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._stub.ModelReady(pb.ModelReadyRequest(name=self.spec.name), timeout=2.0).ready:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {self.spec.name!r} not ready on {self.target} after {timeout_s:.0f}s")
            time.sleep(0.2)

    # -- one frame ------------------------------------------------------------------
    def detect(self, image: Any) -> FrameResult:
        """Process one frame with a unary call; raises FrameFailed on any failure."""
        prepared = self._prepare(image)
        if isinstance(prepared, FrameResult):
            return prepared
        prepared.sent = time.perf_counter()
        try:
            response = self._stub.ModelInfer(prepared.request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise FrameFailed(f"frame {prepared.result.frame_id}: {exc.code().name}: {exc.details()}") from exc
        result = self._finish(prepared, response, time.perf_counter())
        if result.error:
            raise FrameFailed(result.error)
        return result

    # -- many frames ----------------------------------------------------------------
    def stream(self, frames: Iterable[Any]) -> Iterator[FrameResult]:
        """Pipeline frames over one ModelStreamInfer stream; yields results in frame order.

        At most ``max_in_flight`` frames await an answer.  A frame that fails
        (refused, timed out, stream broken) is yielded with ``mode="error"``
        and the reason; the stream is reopened for the frames that follow.
        """
        pending: dict[str, _Pending] = {}
        done: dict[int, FrameResult] = {}
        order: list[int] = []
        session: _StreamSession | None = None

        def flush() -> Iterator[FrameResult]:
            while order and order[0] in done:
                yield done.pop(order.pop(0))

        for image in frames:
            while len(pending) >= self.max_in_flight:
                session = self._collect(session, pending, done, block=True)
            prepared = self._prepare(image)
            if isinstance(prepared, FrameResult):
                order.append(prepared.frame_id)
                done[prepared.frame_id] = prepared
            else:
                order.append(prepared.result.frame_id)
                if session is None:
                    session = _StreamSession(self._stub)
                prepared.sent = time.perf_counter()
                prepared.deadline = prepared.sent + self.timeout_s
                pending[prepared.request.id] = prepared
                session.send(prepared.request)
            session = self._collect(session, pending, done, block=False)
            yield from flush()
        if session is not None:
            session.close()
        while pending:
            session = self._collect(session, pending, done, block=True)
        if session is not None:
            session.cancel()
        yield from flush()

    def _collect(self, session, pending, done, block: bool):
        """Handle stream events; returns the session, or None once it broke."""
        while pending:
            timeout = max(0.0, min(p.deadline for p in pending.values()) - time.perf_counter()) if block else 0.0
            try:
                kind, when, payload = session.events.get(timeout=timeout) if block else session.events.get_nowait()
            except queue.Empty:
                if block:
                    self._expire(pending, done)
                    block = False
                    continue
                return session
            if kind == "response":
                frame_key = payload.infer_response.id
                item = pending.pop(frame_key, None)
                if item is None:
                    log.debug("late or unknown response for frame %r ignored", frame_key)
                    continue
                if payload.error_message:
                    item.result.mode, item.result.error = "error", f"server refused frame: {payload.error_message}"
                    done[item.result.frame_id] = item.result
                else:
                    done[item.result.frame_id] = self._finish(item, payload.infer_response, when)
                if block:
                    return session
            else:  # the stream ended or broke: every frame still waiting is reported as failed
                reason = (
                    f"stream to {self.target} broke: {describe_rpc_error(payload)}"
                    if kind == "failed"
                    else (f"stream to {self.target} closed before the frame was answered")
                )
                for item in pending.values():
                    item.result.mode, item.result.error = "error", reason
                    done[item.result.frame_id] = item.result
                pending.clear()
                log.warning("%s", reason)
                return None
        return session

    def _expire(self, pending: dict[str, _Pending], done: dict[int, FrameResult]) -> None:
        now = time.perf_counter()
        for key in [k for k, p in pending.items() if p.deadline <= now]:
            item = pending.pop(key)
            item.result.mode = "error"
            item.result.error = f"no response from {self.target} within {self.timeout_s:.1f}s"
            done[item.result.frame_id] = item.result

    # -- the per-frame work -----------------------------------------------------------
    def _prepare(self, image: Any) -> _Pending | FrameResult:
        frame_id = self._next_id
        self._next_id += 1
        started = time.perf_counter()
        tensor = to_image_tensor(image)
        result = FrameResult(frame_id, self.mode, self.split, self.codec.name, 0)
        with torch.inference_mode():
            if self.codec.kind == "local":
                outputs = self.model.full(tensor)
                result.timings_ms = {"head": _ms(started), "total": _ms(started)}
                result.split = "local"
                return result_from_outputs(result, outputs)
            features, meta = self.model.head(tensor, self.split)
        head_done = time.perf_counter()
        payload = self.codec.encode(features)
        encoded = time.perf_counter()
        request = build_request(
            self.spec.name, frame_id, payload, self.codec.name, self.split, meta, self.fingerprint, self.session_id
        )
        result.wire_bytes = len(payload)
        result.timings_ms = {"head": (head_done - started) * 1e3, "encode": (encoded - head_done) * 1e3}
        return _Pending(result, request, started)

    def _finish(self, item: _Pending, response: pb.ModelInferResponse, received: float) -> FrameResult:
        result = item.result
        try:
            outputs, params = parse_response(response)
        except WireError as exc:
            result.mode, result.error = "error", f"malformed response: {exc}"
            return result
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
        return result_from_outputs(result, outputs)


class _StreamSession:
    """One ModelStreamInfer call: a request queue in, a receiver thread out."""

    _END = object()

    def __init__(self, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
        self._requests: queue.Queue = queue.Queue()
        self.events: queue.Queue = queue.Queue()
        self._call = stub.ModelStreamInfer(iter(self._requests.get, self._END))
        self._thread = threading.Thread(target=self._receive, name="splitrt-stream-rx", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        try:
            for response in self._call:
                self.events.put(("response", time.perf_counter(), response))
            self.events.put(("closed", time.perf_counter(), None))
        except grpc.RpcError as exc:
            self.events.put(("failed", time.perf_counter(), exc))

    def send(self, request: pb.ModelInferRequest) -> None:
        self._requests.put(request)

    def close(self) -> None:
        self._requests.put(self._END)

    def cancel(self) -> None:
        self._call.cancel()


def describe_rpc_error(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1e3
