"""The Python client: run the head here, the tail on a server, get detections back.

with splitrt.connect("127.0.0.1:8001", model="fasterrcnn_mobilenet_v3_large_320_fpn",
                     split="features.3", codec="int8-zstd") as client:
    result = client.detect(image)           # one frame, one round trip
    for result in client.stream(frames):    # pipelined, results in frame order
        ...
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
import torch

from ..catalog import check_names
from ..models.base import SplitModel
from ..models.spec import ModelSpec, parse_model_flag
from ..policy import LATE_ANSWER_S
from ..wire import kserve_v2_pb2 as pb
from ..wire import kserve_v2_pb2_grpc as pb_grpc
from ..wire.protocol import build_probe
from .connection import (
    Backoff,
    ConnectionOptions,
    call_metadata,
    describe_rpc_error,
    is_transport_failure,
    open_channel,
)
from .frames import FrameFailed, FrameResult
from .hedge import LateAnswers, LateCall, detect_hedged
from .pipeline import AUTO_CODEC, FramePipeline, PendingFrame, default_split
from .session import FrameStream

__all__ = ["FrameFailed", "SplitClient", "default_split", "describe_rpc_error"]


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

    Errors: a bad name or setting (model, split, codec, width) raises at once, before
    anything is built or sent; a frame that fails is a result with ``mode="error"``, from
    ``detect`` and ``stream`` alike (``result.raise_for_error()`` raises `FrameFailed`).
    ``score_threshold`` leaves out detections scoring under it; results carry the
    model's label names (``result.names``) and draw themselves (``result.draw(image)``).

    The work is shared out: `FramePipeline` (the model and each frame's head, codec and
    local runs), `FrameStream` (streaming and resending), `detect_hedged` (hedged frames);
    this class holds the connection and the unary calls.
    """

    def __init__(
        self,
        target: str,
        model: str | ModelSpec,
        split: str | None = None,
        codec: str = AUTO_CODEC,
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
        score_threshold: float = 0.0,
    ) -> None:
        if on_failure not in ("local", "drop"):
            raise ValueError(f"on_failure must be 'local' or 'drop', not {on_failure!r}")
        spec = model if isinstance(model, ModelSpec) else parse_model_flag(model, weights, model_options)
        if spec.card is None:  # a card's branches are its own; the catalogue knows the zoo's
            # A typo fails now, not after the model is built.
            check_names(spec.arch, split, None if codec == AUTO_CODEC else codec)
        self.pipeline = FramePipeline(
            spec, split, codec, width, prefilter, prefilter_threshold, device_slowdown, score_threshold
        )
        #: Hedged frames given up on whose answers may still come (link measurements for the edge).
        self.late_answers = LateAnswers()
        self.target = target
        self.max_in_flight = max(1, max_in_flight)
        self.timeout_s = timeout_s
        self.on_failure = on_failure
        self.max_resends = max_resends
        connection = connection or ConnectionOptions()
        self._metadata = call_metadata(connection)
        self._channel = open_channel(target, connection)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._backoff = Backoff()

    # -- what the pipeline knows, for callers of the client ---------------------------
    @property
    def spec(self) -> ModelSpec:
        return self.pipeline.spec

    @property
    def model(self) -> SplitModel:
        return self.pipeline.model

    @property
    def counters(self) -> dict[str, int]:
        return self.pipeline.counters

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The model's label names, indexed by label (from its card or the zoo), when known."""
        return self.pipeline.model.class_names

    @property
    def split(self) -> str:
        return self.pipeline.split

    @property
    def codec(self):
        return self.pipeline.codec

    @property
    def mode(self) -> str:
        return self.pipeline.mode

    @property
    def width(self) -> float | None:
        return self.pipeline.width

    @property
    def local_input_size(self) -> int | None:
        return self.pipeline.local_input_size

    @property
    def fingerprint(self) -> str:
        return self.pipeline.fingerprint

    def configure(self, *args: Any, **kwargs: Any) -> None:
        """See `FramePipeline.configure`."""
        self.pipeline.configure(*args, **kwargs)

    def use_local(self, input_size: int | None = None, early_exit: bool = False) -> None:
        """See `FramePipeline.use_local`."""
        self.pipeline.use_local(input_size, early_exit)

    def set_width(self, width: float) -> None:
        """See `FramePipeline.set_width`."""
        self.pipeline.set_width(width)

    def run_local_model(self, image: torch.Tensor, cut=None) -> dict:
        """See `FramePipeline.run_local_model`."""
        return self.pipeline.run_local_model(image, cut)

    # -- context management -------------------------------------------------------
    def __enter__(self) -> SplitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.late_answers.cancel_all()
        self.pipeline.wait_for_device()  # a hedged frame's local model, maybe still running
        self._channel.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the server reports this model ready.

        Raises LookupError at once if the server does not serve the model (NOT_FOUND),
        PermissionError if it refuses this client, TimeoutError after ``timeout_s``.
        """
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
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise LookupError(f"{self.target} does not serve model {self.spec.name!r}: {last}") from exc
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"model {self.spec.name!r} not ready on {self.target} after {timeout_s:.0f}s ({last})"
                )
            time.sleep(0.2)

    def probe(self, padding: int, timeout_s: float) -> float | None:
        """Round-trip seconds of a ``padding``-byte link probe, or None if it got no answer in time."""
        request = build_probe(self.spec.name, f"probe-{self.pipeline.session_id}", padding)
        sent = time.perf_counter()
        try:
            self._stub.ModelInfer(request, timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError:
            return None
        return time.perf_counter() - sent

    # -- one frame ------------------------------------------------------------------
    def detect(
        self, image: Any, answer_by: float | None = None, hedge: bool = False, prefer_local: bool = False
    ) -> FrameResult:
        """Process one frame with a unary call.

        ``answer_by`` (a ``time.perf_counter()`` instant) overrides the timeout: an
        unanswered frame is abandoned then and, with ``on_failure="local"``, run on the
        device (what the adaptive edge uses to still meet a deadline).  With ``hedge``
        the local model (at ``local_input_size``) runs while the frame is out and its
        result is delivered if the server has not answered by ``answer_by``
        (``splitrt.edge.hedge``); with ``prefer_local`` too the local result is preferred
        when it is ready by ``answer_by``.

        A frame the server refuses, or that cannot reach it with ``on_failure="drop"``,
        comes back as a result with ``mode="error"`` and the reason in ``error``, as in
        ``stream``; ``result.raise_for_error()`` turns it into a `FrameFailed`.
        """
        prepared = self.pipeline.prepare(image)
        if isinstance(prepared, FrameResult):
            return prepared
        if hedge and answer_by is not None:
            return detect_hedged(self, prepared, answer_by, prefer_local)
        if answer_by is not None:
            return self._detect_until(prepared, answer_by)
        prepared.sent = time.perf_counter()
        try:
            response = self._stub.ModelInfer(prepared.request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            return self._unanswered(prepared, describe_rpc_error(exc), is_transport_failure(exc))
        return self._answered(prepared, response, time.perf_counter())

    def _unanswered(self, prepared: PendingFrame, why: str, may_run_here: bool) -> FrameResult:
        """A unary frame without an answer: run here (``on_failure="local"`` and ``may_run_here``), or
        an error result."""
        reason = f"frame {prepared.result.frame_id}: {why}"
        if may_run_here and self.on_failure == "local":
            return self.pipeline.run_locally(prepared, reason)
        return self.pipeline.error(prepared, reason)

    def _answered(self, prepared: PendingFrame, response, received: float) -> FrameResult:
        return self.pipeline.finish(prepared, response, received)

    def _detect_until(self, prepared: PendingFrame, answer_by: float) -> FrameResult:
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
            return self._unanswered(prepared, describe_rpc_error(exc), is_transport_failure(exc))
        return self._answered(prepared, response, late.received[0] if late.received else time.perf_counter())

    # -- many frames ----------------------------------------------------------------
    def stream(self, frames: Iterable[Any]) -> Iterator[FrameResult]:
        """Pipeline frames over ModelStreamInfer; yields one result per frame, in frame order.

        At most ``max_in_flight`` frames await an answer.  A refused frame is
        yielded with ``mode="error"`` and the server's reason; a broken stream
        is reopened (with backoff) and its frames resent or handled as
        ``on_failure`` says.
        """
        stream = FrameStream(
            self.pipeline,
            self._stub,
            self._metadata,
            self.target,
            self._backoff,
            max_in_flight=self.max_in_flight,
            timeout_s=self.timeout_s,
            max_resends=self.max_resends,
            on_failure=self.on_failure,
        )
        yield from stream.run(frames)
