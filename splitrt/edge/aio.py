"""An asyncio client: the same frames, results and errors as `SplitClient`, for asyncio pipelines.

The head runs on one device thread (one computation at a time on the device, as in the sync
client), the calls go over a ``grpc.aio`` channel, so an event loop can await frames from
many sources without a thread per frame.  Frames in flight are pipelined up to
``max_in_flight``; results come back in frame order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from ..catalog import check_names
from ..models.spec import ModelSpec, parse_model_flag
from ..wire import kserve_v2_pb2 as pb
from ..wire import kserve_v2_pb2_grpc as pb_grpc
from .connection import ConnectionOptions, call_metadata, describe_rpc_error, is_transport_failure, open_channel
from .frames import FrameResult
from .pipeline import AUTO_CODEC, FramePipeline


class AsyncSplitClient:
    """``async with splitrt.connect_async(...) as client: result = await client.detect(image)``.

    Arguments as `splitrt.edge.client.SplitClient`'s.  A frame that fails is a result with
    ``mode="error"`` (``result.raise_for_error()`` raises); a frame that cannot reach the
    server runs on the device with ``on_failure="local"`` (mode ``fallback``).
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
        connection: ConnectionOptions | None = None,
        width: float | None = None,
        prefilter: bool = False,
        prefilter_threshold: float | None = None,
        score_threshold: float = 0.0,
    ) -> None:
        if on_failure not in ("local", "drop"):
            raise ValueError(f"on_failure must be 'local' or 'drop', not {on_failure!r}")
        spec = model if isinstance(model, ModelSpec) else parse_model_flag(model, weights, model_options)
        if spec.card is None:
            check_names(spec.arch, split, None if codec == AUTO_CODEC else codec)
        self.pipeline = FramePipeline(
            spec, split, codec, width, prefilter, prefilter_threshold, score_threshold=score_threshold
        )
        self.target = target
        self.max_in_flight = max(1, max_in_flight)
        self.timeout_s = timeout_s
        self.on_failure = on_failure
        connection = connection or ConnectionOptions()
        self._metadata = call_metadata(connection)
        self._channel = open_channel(target, connection, aio=True)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._device = ThreadPoolExecutor(1, thread_name_prefix="splitrt-device")

    @property
    def model(self):
        return self.pipeline.model

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.pipeline.model.class_names

    @property
    def counters(self) -> dict[str, int]:
        return self.pipeline.counters

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until the server reports the model ready; LookupError at once if it does not serve it."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            try:
                request = pb.ModelReadyRequest(name=self.pipeline.spec.name)
                reply = await self._stub.ModelReady(request, timeout=2.0, metadata=self._metadata)
                if reply.ready:
                    return
                last = "model not ready"
            except grpc.aio.AioRpcError as exc:
                last = describe_rpc_error(exc)
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    name = self.pipeline.spec.name
                    raise LookupError(f"{self.target} does not serve model {name!r}: {last}") from exc
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise PermissionError(f"{self.target} refused this client: {last}") from exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {self.pipeline.spec.name!r} not ready on {self.target} ({last})")
            await asyncio.sleep(0.2)

    async def detect(self, image: Any) -> FrameResult:
        """One frame: its head on the device thread, its tail on the server."""
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._device, self.pipeline.prepare, image)
        if isinstance(prepared, FrameResult):  # local or prefiltered: nothing to send
            return prepared
        prepared.sent = time.perf_counter()
        try:
            response = await self._stub.ModelInfer(prepared.request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            reason = f"frame {prepared.result.frame_id}: {describe_rpc_error(exc)}"
            if is_transport_failure(exc) and self.on_failure == "local":
                return await loop.run_in_executor(self._device, self.pipeline.run_locally, prepared, reason)
            return self.pipeline.error(prepared, reason)
        return self.pipeline.finish(prepared, response, time.perf_counter())

    async def stream(self, frames: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[FrameResult]:
        """One result per frame, in frame order, with up to ``max_in_flight`` frames out at once."""
        pending: deque[asyncio.Task] = deque()
        try:
            async for image in _each(frames):
                pending.append(asyncio.create_task(self.detect(image)))
                while len(pending) >= self.max_in_flight:
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:  # the caller stopped early: no frame is left running for nobody
            for task in pending:
                task.cancel()

    async def close(self) -> None:
        await self._channel.close()
        self._device.shutdown(wait=True)

    async def __aenter__(self) -> AsyncSplitClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _each(frames: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if hasattr(frames, "__aiter__"):
        async for frame in frames:  # type: ignore[union-attr]
            yield frame
    else:
        for frame in frames:  # type: ignore[union-attr]
            yield frame
