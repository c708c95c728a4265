"""The split-model contract shared by the edge (head) and the server (tail)."""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..codecs.base import PayloadLimits, clip

#: The split point at which the edge sends the (encoded) input image itself.
INPUT_SPLIT = "input"
#: The largest original image a frame may claim to come from (boxes are scaled to it).
MAX_ORIGINAL_SIDE = 16384


class SplitError(ValueError):
    """Features, split point or metadata that the model cannot accept."""


@dataclass(frozen=True)
class FrameMeta:
    """What the tail needs to know about the frame besides the features.

    Detection heads resize and pad the image; the tail needs both sizes to
    build anchors and to map boxes back to the caller's pixel coordinates.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    batch_size_hw: tuple[int, int]


@dataclass(frozen=True)
class FeatureSpec:
    """Name and expected channel count of one tensor crossing the split."""

    name: str
    channels: int
    #: Input pixels per feature-map pixel, where known; lets the server check sizes against the frame.
    stride: float | None = None


@dataclass
class HeadResult:
    """What the edge's head produced for one frame (`SplitModel.run_head`)."""

    #: What crosses the network at the split; None when the prefilter dropped the frame.
    features: OrderedDict[str, Tensor] | None
    meta: FrameMeta | None
    #: The prefilter's score, when a prefilter threshold was given.
    score: float | None = None
    #: The tensor at the early exit's cut, when asked for and the head passed through it on the way.
    cut: Tensor | None = None

    @property
    def kept(self) -> bool:
        return self.features is not None


class SplitModel(ABC, nn.Module):
    """A network that can be cut at named points into head and tail.

    ``head(image, split)`` runs on the edge and returns the tensors that cross
    the network; ``tail(features, meta, split)`` runs on the server and returns
    the model's outputs.  For every split point ``tail(*head(x))`` equals
    ``full(x)``.
    """

    task: str = "detection"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self._fingerprint: str | None = None
        #: Names of the output labels, indexed by label (detectors: 0 is the background), when known.
        self.class_names: tuple[str, ...] | None = None

    # -- the contract ---------------------------------------------------------
    @property
    @abstractmethod
    def split_points(self) -> list[str]:
        """Split points from the earliest (``input``) to the latest."""

    def run_head(
        self, image: Tensor, split: str, prefilter: float | bool | None = None, keep_cut: bool = False
    ) -> HeadResult:
        """The edge's one entry point: the head at ``split``, behind the prefilter when ``prefilter`` is a
        threshold (True: the calibrated one), keeping the early exit's input when ``keep_cut``.

        Models with learned parts share layers between them (one pass); a plain model has no prefilter.
        """
        if prefilter is not None and prefilter is not False:
            raise SplitError(f"model {self.name!r} has no prefilter")
        features, meta = self.head(image, split)
        return HeadResult(features, meta)

    @abstractmethod
    def head(self, image: Tensor, split: str) -> tuple[OrderedDict[str, Tensor], FrameMeta]:
        """Edge side: ``image`` is CHW float in [0, 1]."""

    @abstractmethod
    def tail(self, features: OrderedDict[str, Tensor], meta: FrameMeta, split: str) -> dict[str, Tensor]:
        """Server side: outputs in the original image's coordinates."""

    @abstractmethod
    def full(self, image: Tensor) -> dict[str, Tensor]:
        """The unsplit reference model (the torchvision forward)."""

    def tail_batch(
        self, frames: list[tuple[OrderedDict[str, Tensor], FrameMeta]], split: str
    ) -> list[dict[str, Tensor]]:
        """Several frames' tails in one pass (cross-client batching), outputs in the frames' order.

        The default runs them one by one; models override it where a real batch is possible.
        """
        return [self.tail(features, meta, split) for features, meta in frames]

    @contextmanager
    def at_input_size(self, size: int | None) -> Iterator[None]:
        """Run ``full`` at another input size: a cheaper, less accurate local model (None: as built)."""
        if size is not None:
            raise SplitError(f"model {self.name!r} cannot change its input size")
        yield

    @abstractmethod
    def feature_specs(self, split: str) -> list[FeatureSpec]:
        """The tensors that cross the network at ``split``, in order."""

    @property
    @abstractmethod
    def output_names(self) -> list[str]:
        """Names of the outputs ``tail`` returns, in wire order."""

    @abstractmethod
    def max_input_hw(self) -> tuple[int, int]:
        """The largest (padded) input its own preprocessing ever produces: what bounds every frame a server takes."""

    # -- shared helpers -------------------------------------------------------
    def check_split(self, split: str) -> None:
        if split not in self.split_points:
            raise SplitError(
                f"model {self.name!r} has no split point {clip(split)}; choose one of {', '.join(self.split_points)}"
            )

    def check_width(self, split: str, width: float | None) -> None:
        """A frame's width parameter against its split: only slimmable splits have (and need) one."""
        if width is not None:
            raise SplitError(f"split {split!r} has no widths; drop the width parameter")

    def check_frame_meta(self, meta: FrameMeta, split: str) -> None:
        """Sizes a request claims, checked against the model's own limits before anything is decoded."""
        if split == INPUT_SPLIT:
            return
        max_h, max_w = self.max_input_hw()
        batch_h, batch_w = meta.batch_size_hw
        if batch_h > max_h or batch_w > max_w:
            raise SplitError(
                f"frame claims a {batch_h}x{batch_w} input, larger than the {max_h}x{max_w} that "
                f"{self.name!r} produces from any image"
            )
        orig_h, orig_w = meta.original_size
        if orig_h > MAX_ORIGINAL_SIDE or orig_w > MAX_ORIGINAL_SIDE:
            raise SplitError(f"frame claims an original image of {orig_h}x{orig_w}, over {MAX_ORIGINAL_SIDE} a side")

    def payload_limits(self, split: str, meta: FrameMeta | None) -> PayloadLimits:
        """The largest tensors a frame at ``split`` can carry, from its (checked) input size or the model's largest."""
        if split == INPUT_SPLIT:
            return PayloadLimits()
        batch_h, batch_w = meta.batch_size_hw if meta is not None else self.max_input_hw()
        specs = self.feature_specs(split)
        sizes = {
            spec.name: (math.ceil(batch_h / spec.stride) + 1, math.ceil(batch_w / spec.stride) + 1)
            for spec in specs
            if spec.stride
        }
        # Levels too coarse to measure a stride on are no larger than the finest measured one.
        finest = max(sizes.values(), default=(batch_h, batch_w))
        return PayloadLimits({spec.name: (1, spec.channels, *sizes.get(spec.name, finest)) for spec in specs})

    def check_features(self, features: OrderedDict[str, Tensor], split: str) -> None:
        """Reject features that would make the tail fail or, worse, lie."""
        self.check_split(split)
        specs = self.feature_specs(split)
        names = list(features.keys())
        expected = [s.name for s in specs]
        if names != expected:
            raise SplitError(f"split {split!r} of {self.name!r} expects tensors {expected}, got {names}")
        for spec in specs:
            t = features[spec.name]
            if t.dim() != 4 or t.shape[0] != 1 or t.shape[1] != spec.channels:
                raise SplitError(
                    f"tensor {spec.name!r} at split {split!r} must have shape [1, {spec.channels}, H, W], "
                    f"got {tuple(t.shape)}"
                )
            if not torch.isfinite(t).all():
                raise SplitError(f"tensor {spec.name!r} contains NaN or infinite values")

    def check_meta(self, features: OrderedDict[str, Tensor], meta: FrameMeta, split: str) -> None:
        """Feature maps must be as large as the (padded) frame they claim to come from, no larger.

        Without this, a small payload (zstd packs zeros well) could claim huge
        maps and make the tail allocate gigabytes.
        """
        if split == INPUT_SPLIT:
            return
        batch_h, batch_w = meta.batch_size_hw
        largest = (0, 0)
        for spec in self.feature_specs(split):
            t = features[spec.name]
            if spec.stride is None or t.dim() != 4:
                continue
            expected = (math.ceil(batch_h / spec.stride), math.ceil(batch_w / spec.stride))
            if abs(t.shape[-2] - expected[0]) > 1 or abs(t.shape[-1] - expected[1]) > 1:
                raise SplitError(
                    f"tensor {spec.name!r} is {t.shape[-2]}x{t.shape[-1]} but a {batch_h}x{batch_w} frame gives "
                    f"about {expected[0]}x{expected[1]} at split {split!r}"
                )
            largest = (max(largest[0], t.shape[-2]), max(largest[1], t.shape[-1]))
        # The coarsest levels (too small to measure a stride on) can be no larger than the finest checked one.
        for spec in self.feature_specs(split):
            t = features[spec.name]
            if spec.stride is None and t.dim() == 4 and largest != (0, 0):
                if t.shape[-2] > largest[0] or t.shape[-1] > largest[1]:
                    raise SplitError(f"tensor {spec.name!r} is larger than the finer feature maps it goes with")

    def fingerprint(self) -> str:
        """A short hash of the weights; head and tail must agree on it."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for key, value in self.state_dict().items():
                tensor = value.detach().cpu().contiguous()
                digest.update(key.encode())
                digest.update(str(tensor.dtype).encode())
                digest.update(str(tuple(tensor.shape)).encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint
