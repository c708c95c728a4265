"""The models a server holds, and the decode -> check -> tail work on each frame."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from ..codecs import CodecError, get_codec
from ..models.base import INPUT_SPLIT, FrameMeta, SplitError, SplitModel
from ..models.spec import ModelSpec
from ..wire.protocol import FrameRequest

log = logging.getLogger("splitrt.server")


class TailFailed(Exception):
    """A frame that decoded but whose tail raised (the cause is chained): a fault of the server's
    model, not of the frame, unlike a decoding error."""


class RequestError(Exception):
    """A request the server refuses; ``code`` is a grpc.StatusCode."""

    #: Longest message sent back; it may quote what a client sent.
    MAX_MESSAGE = 1000

    def __init__(self, code, message: str) -> None:
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE] + f"...(+{len(message) - self.MAX_MESSAGE} chars)"
        super().__init__(message)
        self.code = code
        self.message = message


class ServedModel:
    """One loaded model with its tail workers (``instances``, like Triton's instance groups).

    Each worker thread runs one frame's tail at a time on the shared model (a forward pass in
    inference mode changes nothing in it); the thread policy gives each worker its share of
    the cores, so several frames run at once on a many-core server without oversubscribing it.
    """

    def __init__(self, spec: ModelSpec, device: str = "cpu", fp16: bool = False, instances: int = 1) -> None:
        if instances < 1:
            raise ValueError(f"instances must be >= 1, not {instances}")
        self.spec = spec
        self.name = spec.name
        self.device = check_device(device, fp16)
        self.fp16 = fp16
        model = spec.build()
        self.fingerprint = model.fingerprint()
        self.model: SplitModel = model.to(self.device).eval()
        self.instances = instances
        self.tail_worker = ThreadPoolExecutor(instances, thread_name_prefix=f"tail-{spec.name}")
        self.batcher = None  # a TailBatcher when the server batches across clients
        #: How long this model's last unbatched frame took to decode and run (None before the first).
        self.recent_job_s: float | None = None

    def decode(self, frame: FrameRequest) -> tuple[OrderedDict[str, Tensor], FrameMeta]:
        """Decode and validate a frame's payload; raises CodecError or SplitError."""
        self.model.check_split(frame.split)
        codec = get_codec(frame.codec, self.model, frame.split)
        if codec.kind == "local":
            raise CodecError("codec 'local' means the edge runs the model itself; nothing should be sent")
        if (codec.kind == "image") != (frame.split == INPUT_SPLIT):
            raise CodecError(
                f"codec {codec.name!r} ({codec.kind}) cannot be used at split {frame.split!r}: "
                "image codecs go with the 'input' split, feature codecs with every other split"
            )
        if frame.fingerprint is not None and frame.fingerprint != self.fingerprint:
            raise SplitError(
                f"model fingerprint mismatch: the edge's head has weights {frame.fingerprint}, "
                f"this server's {self.name!r} has {self.fingerprint}; load the same weights on both sides"
            )
        if frame.meta is not None:
            self.model.check_frame_meta(frame.meta, frame.split)
        self.model.check_width(frame.split, frame.width)  # before decoding: a bad parameter costs nothing
        features = codec.decode(frame.payload, self.model.payload_limits(frame.split, frame.meta))
        if frame.width is not None:
            self.model.check_features(features, frame.split, frame.width)
        else:
            self.model.check_features(features, frame.split)
        meta = frame.meta
        if meta is None:
            image = features["image"]
            size = (int(image.shape[-2]), int(image.shape[-1]))
            meta = FrameMeta(size, size, size)
        self.model.check_meta(features, meta, frame.split)
        return features, meta

    def tail(
        self, features: OrderedDict[str, Tensor], meta: FrameMeta, split: str
    ) -> tuple[dict[str, Tensor], int, int]:
        """Run the tail; returns outputs on the CPU and the start/end times in ns."""
        start = time.perf_counter_ns()
        with torch.inference_mode():
            on_device = OrderedDict((k, v.to(self.device, non_blocking=True)) for k, v in features.items())
            with self._precision():
                outputs = self.model.tail(on_device, meta, split)
            outputs = {k: _to_cpu(outputs[k]) for k in self.model.output_names}
        return outputs, start, time.perf_counter_ns()

    def infer(self, frame: FrameRequest) -> tuple[dict[str, Tensor], int, int, int]:
        """Decode and run one frame on the calling worker: outputs, decode ns, tail start/end ns.

        A frame that fails to decode raises what the decoder raised; one whose tail fails raises
        `TailFailed`, so that the caller can tell the two apart without a callback in between.
        """
        began = time.perf_counter_ns()
        features, meta = self.decode(frame)
        decode_ns = time.perf_counter_ns() - began
        try:
            outputs, start, end = self.tail(features, meta, frame.split)
        except (CodecError, SplitError):
            raise  # the frame's fault, found only by the tail
        except Exception as exc:
            raise TailFailed(str(exc)) from exc
        self.recent_job_s = (end - began) / 1e9
        return outputs, decode_ns, start, end

    def tail_batch(
        self, frames: list[tuple[OrderedDict[str, Tensor], FrameMeta]], split: str
    ) -> tuple[list[dict[str, Tensor]], int, int]:
        """Several frames' tails in one call (the dynamic batcher's unit of work)."""
        start = time.perf_counter_ns()
        with torch.inference_mode():
            on_device = [
                (OrderedDict((k, v.to(self.device, non_blocking=True)) for k, v in features.items()), meta)
                for features, meta in frames
            ]
            with self._precision():
                results = self.model.tail_batch(on_device, split)
            results = [{k: _to_cpu(out[k]) for k in self.model.output_names} for out in results]
        return results, start, time.perf_counter_ns()

    def _precision(self):
        """fp16 tails on CUDA run under autocast: convolutions in half, box decoding stays in float."""
        if self.fp16:
            return torch.autocast(device_type=self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.tail_worker.shutdown(wait=True, cancel_futures=True)


def check_device(device: str, fp16: bool = False) -> torch.device:
    """The torch device for tails, refusing what this machine cannot do with a reason."""
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1): {exc}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: this machine has no CUDA device (torch {torch.__version__})")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if fp16 and parsed.type != "cuda":
        raise ValueError("--fp16 runs tails in half precision on a GPU; use it with --device cuda")
    return parsed


def _to_cpu(tensor: Tensor) -> Tensor:
    tensor = tensor.cpu()
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


class ModelRepository:
    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        #: Models named in the configuration but not loaded yet: their frames are told to come back.
        self.loading: set[str] = set()
        self.ready = False

    def load(self, specs: list[ModelSpec], device: str, fp16: bool = False, instances: int = 1) -> None:
        self.loading = {spec.name for spec in specs}
        try:
            for spec in specs:
                self._load_one(spec, device, fp16, instances)
        finally:
            self.loading = set()
        self.ready = True

    def _load_one(self, spec: ModelSpec, device: str, fp16: bool, instances: int) -> None:
        started = time.perf_counter()
        self._models[spec.name] = ServedModel(spec, device, fp16, instances)
        self.loading.discard(spec.name)
        log.info(
            "loaded model %s (%s, fingerprint %s) on %s in %.1fs",
            spec.name,
            spec.arch,
            self._models[spec.name].fingerprint,
            device,
            time.perf_counter() - started,
        )

    def get(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return list(self._models)

    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    def close(self) -> None:
        for served in self._models.values():
            served.close()
