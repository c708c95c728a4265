"""The models a server holds, and the decode -> check -> tail work on each frame."""

from __future__ import annotations

import logging
import math
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


class RequestError(Exception):
    """A request the server refuses; ``code`` is a grpc.StatusCode."""

    def __init__(self, code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ServedModel:
    """One loaded model with its own tail worker.

    One worker thread per model: torch already spreads a tail over the cores,
    and a single worker makes the queue time the server reports meaningful.
    """

    def __init__(self, spec: ModelSpec, device: str = "cpu") -> None:
        self.spec = spec
        self.name = spec.name
        self.device = torch.device(device)
        model = spec.build()
        self.fingerprint = model.fingerprint()
        self.model: SplitModel = model.to(self.device).eval()
        self.tail_worker = ThreadPoolExecutor(1, thread_name_prefix=f"tail-{spec.name}")
        self.batcher = None  # a TailBatcher when the server batches across clients

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
        stride = self.model.feature_specs(frame.split)[0].stride
        if frame.meta is not None and stride and hasattr(codec, "limit_latent"):
            batch_h, batch_w = frame.meta.batch_size_hw
            codec.limit_latent(math.ceil(batch_h / stride) + 1, math.ceil(batch_w / stride) + 1)
        slim = self._slim_branch(frame)
        features = codec.decode(frame.payload)
        self.model.check_features(features, frame.split)
        if slim is not None:
            self._check_width(frame, slim, features)
        meta = frame.meta
        if meta is None:
            image = features["image"]
            size = (int(image.shape[-2]), int(image.shape[-1]))
            meta = FrameMeta(size, size, size)
        self.model.check_meta(features, meta, frame.split)
        return features, meta

    def _slim_branch(self, frame: FrameRequest):
        """The slimmable branch a frame goes to, after checking its width parameter (before decoding)."""
        branch_of = getattr(self.model, "branch", None)
        slim = branch_of is not None and frame.split in self.model.branch_splits and branch_of(frame.split).slimmable
        if not slim:
            if frame.width is not None:
                raise SplitError(f"split {frame.split!r} has no widths; drop the width parameter")
            return None
        branch = branch_of(frame.split)
        if frame.width is None:
            raise SplitError(f"split {frame.split!r} is slimmable: the request must carry its width")
        if frame.width not in branch.widths:
            raise SplitError(f"width {frame.width} is not one of {frame.split!r}'s widths {list(branch.widths)}")
        return branch

    @staticmethod
    def _check_width(frame: FrameRequest, branch, features: OrderedDict[str, Tensor]) -> None:
        channels = next(iter(features.values())).shape[1]
        if channels != branch.channels(frame.width):
            raise SplitError(
                f"width {frame.width} means {branch.channels(frame.width)} latent channels, the payload has {channels}"
            )

    def tail(
        self, features: OrderedDict[str, Tensor], meta: FrameMeta, split: str
    ) -> tuple[dict[str, Tensor], int, int]:
        """Run the tail; returns outputs on the CPU and the start/end times in ns."""
        start = time.perf_counter_ns()
        with torch.inference_mode():
            on_device = OrderedDict((k, v.to(self.device, non_blocking=True)) for k, v in features.items())
            outputs = self.model.tail(on_device, meta, split)
            outputs = {k: outputs[k].cpu() for k in self.model.output_names}
        return outputs, start, time.perf_counter_ns()

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
            results = self.model.tail_batch(on_device, split)
            results = [{k: out[k].cpu() for k in self.model.output_names} for out in results]
        return results, start, time.perf_counter_ns()

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.tail_worker.shutdown(wait=True, cancel_futures=True)


class ModelRepository:
    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self.ready = False

    def load(self, specs: list[ModelSpec], device: str) -> None:
        for spec in specs:
            started = time.perf_counter()
            self._models[spec.name] = ServedModel(spec, device)
            log.info(
                "loaded model %s (%s, fingerprint %s) on %s in %.1fs",
                spec.name,
                spec.arch,
                self._models[spec.name].fingerprint,
                device,
                time.perf_counter() - started,
            )
        self.ready = True

    def get(self, name: str) -> ServedModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return list(self._models)

    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    def close(self) -> None:
        for served in self._models.values():
            served.close()
