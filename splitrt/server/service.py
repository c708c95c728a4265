"""The GRPCInferenceService implementation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import torch

from .. import __version__
from ..codecs import CodecError
from ..codecs.base import clip
from ..models.base import SplitError
from ..wire import kserve_v2_pb2 as pb
from ..wire import kserve_v2_pb2_grpc as pb_grpc
from ..wire.protocol import (
    BATCH_SIZE,
    DECODE_US,
    PAYLOAD_INPUT,
    QUEUE_US,
    TAIL_US,
    FrameRequest,
    WireError,
    build_response,
    is_probe,
    parse_request_frames,
)
from .admission import AdmissionLimits, FairQueue, Overloaded, ServerBudget
from .metrics import ServerMetrics
from .repository import ModelRepository, RequestError, ServedModel, TailFailed
from .security import RateLimiter, token_identity
from .statistics import ModelBook

log = logging.getLogger("splitrt.server")

#: Requests of one stream processed concurrently; further reads wait (HTTP/2 flow control pushes back).
STREAM_CONCURRENCY = 16
_BAD_INPUT = (WireError, CodecError, SplitError)
#: The one model version this server serves (KServe: another version is NOT_FOUND).
SERVED_VERSION = "1"
#: A model whose frames decode and run in at most this long runs them on the event loop (one instance).
INLINE_JOB_MS = 50.0


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        repository: ModelRepository,
        device: str,
        metrics: ServerMetrics | None = None,
        rate_limiter: RateLimiter | None = None,
        stream_concurrency: int = STREAM_CONCURRENCY,
        decode_workers: int = 2,
        admission: AdmissionLimits | None = None,
        authenticated: bool = False,
        inline_job_ms: float = INLINE_JOB_MS,
    ) -> None:
        self.repository = repository
        self.inline_job_ms = inline_job_ms
        self.device = device
        self.metrics = metrics or ServerMetrics()
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter(0)
        self.stream_concurrency = stream_concurrency
        self.decode_pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="decode")
        self.admission = admission or AdmissionLimits()
        self.budget = ServerBudget(self.admission.max_total)
        self._queues: dict[str, FairQueue] = {}
        #: Whether an interceptor has verified every caller's token (then the token names the client).
        self.authenticated = authenticated
        self._refusal_log: dict[grpc.StatusCode, tuple[float, int]] = {}
        #: Counts and times per model since start (the ModelStatistics RPC).
        self.statistics: defaultdict[str, ModelBook] = defaultdict(ModelBook)

    def queue(self, model: str) -> FairQueue:
        if model not in self._queues:
            self._queues[model] = FairQueue(model, self.admission, self.budget)
        return self._queues[model]

    @property
    def overloaded(self) -> bool:
        """True while frames are being refused for lack of room (readiness and health report it)."""
        return self.budget.full or any(q.saturated for q in self._queues.values())

    # -- health and metadata ----------------------------------------------------
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.repository.ready and not self.overloaded)

    async def ModelReady(self, request, context):
        """Ready, not ready (loading, or refusing frames for lack of room), or NOT_FOUND: a model this
        server will never serve is an error at once, not a wait until the caller's timeout."""
        served = self.repository.get(request.name)
        if served is None:
            if request.name in self.repository.loading or not self.repository.ready:
                return pb.ModelReadyResponse(ready=False)
            await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown_model(request.name))
        if request.version not in ("", SERVED_VERSION):
            await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown_version(served.name, request.version))
        return pb.ModelReadyResponse(ready=not self.queue(served.name).saturated and not self.budget.full)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(
            name="splitrt",
            version=__version__,
            extensions=["splitrt_split_inference", "model_stream_infer", f"device:{self.device}"],
        )

    async def ModelMetadata(self, request, context):
        served = self.repository.get(request.name)
        if served is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown_model(request.name))
        if request.version not in ("", SERVED_VERSION):
            await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown_version(served.name, request.version))
        model = served.model
        response = pb.ModelMetadataResponse(name=served.name, versions=["1"], platform=f"splitrt_{model.task}")
        response.inputs.add(name=PAYLOAD_INPUT, datatype="UINT8", shape=[-1])
        if model.task == "detection":
            response.outputs.add(name="boxes", datatype="FP32", shape=[-1, 4])
            response.outputs.add(name="scores", datatype="FP32", shape=[-1])
            response.outputs.add(name="labels", datatype="INT64", shape=[-1])
        else:
            response.outputs.add(name="logits", datatype="FP32", shape=[1, -1])
        return response

    async def ModelConfig(self, request, context):
        """Triton's configuration view of a model (perf_analyzer needs it), derived from ModelMetadata so
        the two never disagree. Requests carry no batch dimension (max_batch_size 0): frames from
        different clients may still share a tail call, but that batching happens inside the server."""
        query = pb.ModelMetadataRequest(name=request.name, version=request.version)
        metadata = await self.ModelMetadata(query, context)  # aborts with NOT_FOUND as ModelMetadata does
        config = pb.ModelConfig(
            name=metadata.name,
            platform=metadata.platform,
            backend="splitrt",
            max_batch_size=0,
            model_transaction_policy=pb.ModelTransactionPolicy(decoupled=False),  # one answer per request
        )
        for tensor in metadata.inputs:
            config.input.add(name=tensor.name, data_type=_config_type(tensor.datatype), dims=tensor.shape)
        for tensor in metadata.outputs:
            config.output.add(name=tensor.name, data_type=_config_type(tensor.datatype), dims=tensor.shape)
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request, context):
        """Counts and cumulative times per model since the server started (Triton's statistics extension)."""
        if request.name:
            served = self.repository.get(request.name)
            if served is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown_model(request.name))
            if request.version not in ("", SERVED_VERSION):
                await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown_version(served.name, request.version))
            names = [served.name]
        else:
            names = self.repository.names()
        return pb.ModelStatisticsResponse(
            model_stats=[self.statistics[name].to_proto(name, SERVED_VERSION) for name in names]
        )

    async def RepositoryIndex(self, request, context):
        """Every model of the configuration: READY, LOADING (a restarted server) or UNAVAILABLE (refusing
        frames for lack of room); ``ready`` keeps only the ready ones."""
        index = pb.RepositoryIndexResponse()
        for name in self.repository.names():
            saturated = self.queue(name).saturated or self.budget.full
            state, reason = (
                ("UNAVAILABLE", "overloaded: frames are refused for lack of room") if saturated else ("READY", "")
            )
            if not request.ready or state == "READY":
                index.models.add(name=name, version=SERVED_VERSION, state=state, reason=reason)
        if not request.ready:
            for name in sorted(self.repository.loading - set(self.repository.names())):
                index.models.add(name=name, version=SERVED_VERSION, state="LOADING", reason="loading")
        return index

    # -- inference ----------------------------------------------------------------
    async def ModelInfer(self, request, context):
        try:
            return await self._infer(request, self._client(context))
        except Exception as exc:
            # Only the status and text leave this block: nothing of a refused frame (payload, decoded
            # tensors, the traceback's frames) outlives its answer.
            code, message = self._refusal(request, exc)
        await context.abort(code, message)

    async def ModelStreamInfer(self, request_iterator, context):
        """Each frame is answered by its own task, which writes the answer itself as soon as it is ready
        (answers may overtake each other; the edge matches them by id).  Writing from the task, not
        through a queue and a response generator, spares every frame a hand-over on the event loop."""
        slots = asyncio.Semaphore(self.stream_concurrency)
        writing = asyncio.Lock()  # one message at a time on a call
        client = self._client(context)
        tasks: set[asyncio.Task] = set()

        async def answer(request):
            try:
                try:
                    item = pb.ModelStreamInferResponse(infer_response=await self._infer(request, client))
                except Exception as exc:  # every frame gets an answer, whatever went wrong
                    code, message = self._refusal(request, exc)
                    # The id travels back with the error so the edge can report that very frame.
                    item = pb.ModelStreamInferResponse(
                        error_message=f"{code.name}: {message}",
                        infer_response=pb.ModelInferResponse(model_name=request.model_name[:200], id=request.id[:200]),
                    )
                async with writing:
                    await context.write(item)
            finally:
                # The slot is freed once the answer is sent: a client that stops reading holds at most
                # stream_concurrency answers here, and HTTP/2 flow control stops its further frames.
                slots.release()

        handler = asyncio.current_task()

        def finished(task: asyncio.Task) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                # A failed write: the call is broken (the client is gone).  End the stream, as the
                # first failed write of a response generator would, instead of reading on.
                log.debug("stream answer failed: %r", task.exception())
                handler.cancel()

        try:
            async for request in request_iterator:
                await slots.acquire()
                task = asyncio.create_task(answer(request))
                tasks.add(task)
                task.add_done_callback(finished)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # the client is gone: do not start tails nobody will read
                task.cancel()

    def _client(self, context) -> str:
        """Who is calling, for rate limits and fair turns: their verified token's short hash when tokens
        are checked, else their address without the port (reconnecting does not make a new client).
        An unchecked header names nobody: anyone could send a new one per stream."""
        if self.authenticated:
            identity = token_identity(context.invocation_metadata())
            if identity is not None:
                return "token:" + identity
        return context.peer().rpartition(":")[0]

    def _refusal(self, request, exc: Exception) -> tuple[grpc.StatusCode, str]:
        """The status and message a failed frame is answered with, logged once (attacker strings clipped)."""
        if not isinstance(exc, RequestError):
            log.exception("frame %s for %s failed unexpectedly", clip(request.id), clip(request.model_name))
            exc = RequestError(grpc.StatusCode.INTERNAL, f"frame {clip(request.id)}: {type(exc).__name__}: {exc}")
        model = request.model_name if self.repository.get(request.model_name) is not None else "(unknown)"
        self.metrics.errors.labels(model, exc.code.name).inc()
        # A flood of refusals must not turn into a flood of log lines (they cost the tails CPU time):
        # at most one line per status a second, with the count of those left out.
        now = time.monotonic()
        last, skipped = self._refusal_log.get(exc.code, (0.0, 0))
        if now - last >= 1.0:
            more = f" ({skipped} more {exc.code.name} refusals in the last second not logged)" if skipped else ""
            log.warning(
                "frame %s for %s refused: %s%s",
                clip(request.id),
                clip(model),
                exc.message,
                more,
                extra={"frame_id": clip(request.id), "model": model, "code": exc.code.name, "not_logged": skipped},
            )
            self._refusal_log[exc.code] = (now, 0)
        else:
            self._refusal_log[exc.code] = (last, skipped + 1)
        return exc.code, exc.message

    async def _infer(self, request, client: str) -> pb.ModelInferResponse:
        arrival = time.perf_counter_ns()
        if not self.rate_limiter.allow(client):
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"frame {clip(request.id)}: over the rate limit of {self.rate_limiter.rate:g} frames/s for this client",
            )
        served = self.repository.get(request.model_name)
        if served is None:
            if request.model_name in self.repository.loading:  # a restarted server: the edge resends later
                raise RequestError(
                    grpc.StatusCode.UNAVAILABLE, f"model {request.model_name!r} is still loading; retry shortly"
                )
            raise RequestError(grpc.StatusCode.NOT_FOUND, self._unknown_model(request.model_name))
        if request.model_version not in ("", SERVED_VERSION):
            raise RequestError(grpc.StatusCode.NOT_FOUND, self._unknown_version(served.name, request.model_version))
        if is_probe(request):  # an edge measuring its uplink: nothing to decode or run
            return pb.ModelInferResponse(model_name=served.name, id=request.id)
        queue = self.queue(served.name)
        if not queue.try_enter():  # a turn free at once is the common case: no coroutine for it
            try:
                await queue.enter(client)
            except Overloaded as exc:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"frame {clip(request.id)}: {exc}") from None
        gauge = self.metrics.in_flight_of(served.name)
        gauge.inc()
        try:
            return await self._run(request, served, arrival)
        finally:
            gauge.dec()
            queue.leave()

    async def _run(self, request, served, arrival: int) -> pb.ModelInferResponse:
        try:
            frames = parse_request_frames(request)
            wanted = requested_outputs(request, output_names(served, batched=len(frames) > 1))
        except WireError as exc:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"frame {clip(request.id)}: {exc}") from None
        book = self.statistics[served.name]
        done, since = [], arrival
        try:
            for frame in frames:  # a plain client's batch: one image after the other
                done.append(await self._run_frame(request, frame, served, since))
                since = time.perf_counter_ns()
        except Exception:
            book.failed(time.perf_counter_ns() - arrival)
            for frame in frames[: len(done)]:  # a plain client's batch: the images that did run count
                self._count_decoded(served.name, frame)
            raise
        began = time.perf_counter_ns()
        if len(done) == 1:
            first = done[0]
            outputs, decode_ns, waited, tail_ns = first.outputs, first.decode_ns, first.waited_ns, first.tail_ns
        else:
            outputs = stack_batch([d.outputs for d in done])
            decode_ns, waited, tail_ns = (
                sum(getattr(d, k) for d in done) for k in ("decode_ns", "waited_ns", "tail_ns")
            )
        timings = {
            DECODE_US: decode_ns // 1000,
            QUEUE_US: waited // 1000,
            TAIL_US: tail_ns // 1000,
            BATCH_SIZE: done[0].batch_size,
        }
        response = build_response(served.name, request.id, {k: outputs[k] for k in wanted}, timings)
        output_ns = time.perf_counter_ns() - began
        total_ns = time.perf_counter_ns() - arrival
        # Metrics and statistics are kept once the answer is on its way: the loop runs this callback
        # while gRPC sends it, so the bookkeeping does not delay the frame.
        asyncio.get_running_loop().call_soon(self._account, served.name, frames, done, total_ns, output_ns)
        return response

    def _account(self, model: str, frames: list[FrameRequest], done: list[FrameDone], total_ns: int, output_ns: int):
        """A request's frames in the metrics and ModelStatistics."""
        book = self.statistics[model]
        share = len(done)  # a plain client's batch: each image gets its share of the request's time
        for frame, d in zip(frames, done, strict=True):
            self._count_decoded(model, frame)
            series = self.metrics.split_series(model, frame.split)
            series.decode.observe(d.decode_ns / 1e9)
            series.queue.observe(d.waited_ns / 1e9)
            series.tail.observe(d.tail_ns / 1e9)
            series.frame_latency.observe(total_ns / 1e9 / share)
            series.batch_size.observe(d.batch_size)
            book.answered(total_ns // share, d.waited_ns, d.decode_ns, d.tail_ns, output_ns // share, d.batch_size)

    async def _run_frame(self, request, frame: FrameRequest, served: ServedModel, arrival: int) -> FrameDone:
        try:
            if served.batcher is None and self._runs_inline(served):
                outputs, decode_ns, start, end = served.infer(frame)
                batch_size = 1
            elif served.batcher is None:  # decode and tail in one job: two thread hops fewer per frame
                outputs, decode_ns, start, end = await asyncio.get_running_loop().run_in_executor(
                    served.tail_worker, served.infer, frame
                )
                batch_size = 1
            else:  # decoded apart, so that frames decode while a batch runs
                (features, meta), decode_ns = await asyncio.get_running_loop().run_in_executor(
                    self.decode_pool, _timed, served.decode, frame
                )
                try:
                    outputs, start, end, batch_size = await served.batcher.submit(features, meta, frame.split)
                except _BAD_INPUT:
                    raise
                except Exception as exc:
                    raise TailFailed(str(exc)) from exc
        except _BAD_INPUT as exc:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"frame {clip(request.id)}: {exc}") from None
        except TailFailed as exc:  # a tail failure must not take the server down; the frame itself was valid
            self._count_decoded(served.name, frame)
            log.error("tail of %s failed on frame %s", served.name, clip(request.id), exc_info=exc.__cause__)
            raise RequestError(grpc.StatusCode.INTERNAL, f"frame {clip(request.id)}: tail failed: {exc}") from None
        # Any other exception is a fault in decoding: reported as such (INTERNAL, with its type) by _refusal.
        # A frame answered is counted in the request metrics by _account, once its answer is on its way.

        # decode: the decoding work itself; queue: every wait before the tail started (a turn, thread hops).
        waited = max(0, start - arrival - decode_ns)
        return FrameDone(outputs, decode_ns, waited, end - start, batch_size)

    def _count_decoded(self, model: str, frame: FrameRequest) -> None:
        """A decoded frame in the request metrics: labelled only once decoded, when its split and codec are
        known values rather than whatever a client sent."""
        self.metrics.requests_of(model, frame.split, codec_family(frame.codec)).inc()
        self.metrics.split_series(model, frame.split).bytes_in.inc(len(frame.payload))

    def _runs_inline(self, served: ServedModel) -> bool:
        """Whether this frame decodes and runs its tail on the event loop itself, not on a worker.

        With one tail instance frames run one at a time anyway, and the two thread hand-overs of a
        worker (and waking the loop after it) are most of what splitrt adds per frame.  The loop is
        blocked meanwhile (health checks and refusals wait), so only for models whose last frame took
        at most ``inline_job_ms``; 0 turns it off.
        """
        recent = served.recent_job_s
        return served.instances == 1 and recent is not None and recent * 1e3 <= self.inline_job_ms

    def _unknown_model(self, name: str) -> str:
        return f"unknown model {clip(name)}; this server serves {', '.join(self.repository.names()) or 'nothing yet'}"

    @staticmethod
    def _unknown_version(model: str, version: str) -> str:
        return f"model {model!r} has no version {clip(version)}; this server serves version {SERVED_VERSION}"


@dataclass
class FrameDone:
    """One frame through decode and tail: its outputs and where its time went (ns)."""

    outputs: dict
    decode_ns: int
    waited_ns: int
    tail_ns: int
    batch_size: int


def requested_outputs(request, names: list[str]) -> list[str]:
    """The outputs a request asked for (KServe: none named means all of them), in the model's order."""
    asked = [o.name for o in request.outputs]
    if not asked:
        return list(names)
    unknown = [n for n in asked if n not in names]
    if unknown:
        raise WireError(f"unknown output {clip(unknown[0])}; this model's outputs: {', '.join(names)}")
    return [n for n in names if n in asked]


def output_names(served: ServedModel, batched: bool = False) -> list[str]:
    names = list(served.model.output_names)
    return names + ["num_detections"] if batched and "boxes" in names else names


def stack_batch(frames: list[dict]) -> dict:
    """A plain client's batch as one set of outputs with a leading batch dimension.

    Detections differ in count per image: they are padded to the largest count (boxes and
    scores with 0, labels with -1) and ``num_detections`` [B] says how many of each are real.
    """
    out = {}
    for name in frames[0]:
        values = [f[name] for f in frames]
        if all(v.shape == values[0].shape for v in values):
            out[name] = torch.stack(values)
            continue
        longest = max(v.shape[0] for v in values)
        fill = -1 if name == "labels" else 0
        padded = [torch.cat([v, v.new_full((longest - v.shape[0], *v.shape[1:]), fill)]) for v in values]
        out[name] = torch.stack(padded)
    if "boxes" in frames[0]:
        out["num_detections"] = torch.tensor([len(f["boxes"]) for f in frames], dtype=torch.int64)
    return out


def codec_family(codec: str) -> str:
    """A metric label for a codec: ``jpeg:75`` and ``jpeg:90`` are both ``jpeg`` (a bounded set)."""
    return codec.partition(":")[0]


def _timed(work, *args):
    """``work(*args)`` and the nanoseconds it took, measured on the thread that did it."""
    began = time.perf_counter_ns()
    return work(*args), time.perf_counter_ns() - began


def _config_type(datatype: str) -> int:
    """The model-configuration enum for a KServe datatype name ("FP32" is TYPE_FP32)."""
    return pb.DataType.Value("TYPE_" + datatype)
