"""torchvision detectors cut inside the backbone (or after its neck)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from .base import INPUT_SPLIT, FeatureSpec, FrameMeta, SplitModel
from .stages import Stage, cut_channels, cut_features, probe_stride, resume, run_stages

#: Runs the detector's part after the backbone: (detector, images, features) -> raw detections.
Predictor = Callable[[nn.Module, ImageList, "OrderedDict[str, Tensor]"], list[dict[str, Tensor]]]

_PROBE_SIZE = 128


class DetectionSplitModel(SplitModel):
    """A torchvision detector with named cuts between backbone stages.

    The edge runs torchvision's own resize/normalise transform and the first
    stages; the server runs the remaining stages, the neck (FPN) if any, the
    detection head, and torchvision's box rescaling to the original image.
    """

    task = "detection"

    def __init__(
        self,
        name: str,
        detector: nn.Module,
        stages: list[Stage],
        cuts: dict[str, int],
        predict: Predictor,
        neck: nn.Module | None = None,
        neck_split: str = "fpn",
    ) -> None:
        super().__init__(name)
        self.detector = detector.eval()
        self._stages = stages
        self._cuts = cuts
        self._predict = predict
        # The neck is a submodule of the detector already; bypass nn.Module's
        # registration so its weights are not listed (and saved) twice.
        self.__dict__["_neck"] = neck
        self._neck_split = neck_split if neck is not None else None
        self._specs = self._probe_specs()

    # -- introspection --------------------------------------------------------
    @property
    def split_points(self) -> list[str]:
        points = [INPUT_SPLIT, *self._cuts]
        if self._neck_split is not None:
            points.append(self._neck_split)
        return points

    @property
    def output_names(self) -> list[str]:
        return ["boxes", "scores", "labels"]

    def feature_specs(self, split: str) -> list[FeatureSpec]:
        self.check_split(split)
        return self._specs[split]

    @torch.no_grad()
    def _probe_specs(self) -> dict[str, list[FeatureSpec]]:
        probe = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE)
        specs = {INPUT_SPLIT: [FeatureSpec("image", 3)]}
        for split, stop in self._cuts.items():
            specs[split] = [FeatureSpec(n, c, s) for n, c, s in cut_channels(self._stages, probe, stop)]
        if self._neck is not None:
            emitted: OrderedDict[str, Tensor] = OrderedDict()
            run_stages(self._stages, probe, emitted, 0, len(self._stages))
            specs[self._neck_split] = [
                FeatureSpec(k, int(v.shape[1]), probe_stride(probe, v)) for k, v in self._neck(emitted).items()
            ]
        return specs

    def max_input_hw(self) -> tuple[int, int]:
        transform = self.detector.transform
        fixed = getattr(transform, "fixed_size", None)
        if fixed:
            return int(fixed[0]), int(fixed[1])
        # torchvision scales the short side to min_size but never the long side past max_size, then pads.
        divisible = int(getattr(transform, "size_divisible", 32) or 1)
        side = math.ceil(int(transform.max_size) / divisible) * divisible
        return side, side

    # -- the split ------------------------------------------------------------
    def head(self, image: Tensor, split: str) -> tuple[OrderedDict[str, Tensor], FrameMeta]:
        self.check_split(split)
        if split == INPUT_SPLIT:
            original = (int(image.shape[-2]), int(image.shape[-1]))
            return OrderedDict(image=image.unsqueeze(0)), FrameMeta(original, original, original)
        batch, meta = self.preprocess(image)
        return self.head_from_batch(batch, split), meta

    def preprocess(self, image: Tensor) -> tuple[Tensor, FrameMeta]:
        """The detector's own resize + normalise + pad: what an exported head expects as input."""
        images, _ = self.detector.transform([image])
        original = (int(image.shape[-2]), int(image.shape[-1]))
        batch_hw = (int(images.tensors.shape[-2]), int(images.tensors.shape[-1]))
        return images.tensors, FrameMeta(original, tuple(images.image_sizes[0]), batch_hw)

    def head_from_batch(self, batch: Tensor, split: str) -> OrderedDict[str, Tensor]:
        """The head after preprocessing: the part worth exporting (TorchScript) for a device."""
        emitted: OrderedDict[str, Tensor] = OrderedDict()
        stop = self._cuts.get(split, len(self._stages))
        x = run_stages(self._stages, batch, emitted, 0, stop)
        if split == self._neck_split:
            return self._neck(emitted)
        return cut_features(self._stages, x, emitted, stop)

    def tail(self, features: OrderedDict[str, Tensor], meta: FrameMeta, split: str) -> dict[str, Tensor]:
        self.check_split(split)
        if split == INPUT_SPLIT:
            return self.full(features["image"][0])
        return self._tail_group([(features, meta)], split)[0]

    def tail_batch(
        self, frames: list[tuple[OrderedDict[str, Tensor], FrameMeta]], split: str
    ) -> list[dict[str, Tensor]]:
        """Frames with the same padded size run as one batch; others in one batch per size."""
        self.check_split(split)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (features, meta) in enumerate(frames):
            # Offloaded images batch with images of their size (so the padding is what one alone gets).
            key = tuple(features["image"].shape) if split == INPUT_SPLIT else tuple(meta.batch_size_hw)
            groups.setdefault(key, []).append(index)
        outputs: list[dict[str, Tensor] | None] = [None] * len(frames)
        for indices in groups.values():
            group = [frames[i] for i in indices]
            if split == INPUT_SPLIT:
                results = self.detector([features["image"][0] for features, _ in group])
            else:
                results = self._tail_group(group, split)
            for index, out in zip(indices, results):
                outputs[index] = out
        return outputs

    def _tail_group(self, frames: list[tuple[OrderedDict[str, Tensor], FrameMeta]], split: str) -> list[dict]:
        names = list(frames[0][0])
        features = OrderedDict((name, torch.cat([f[name] for f, _ in frames])) for name in names)
        metas = [meta for _, meta in frames]
        if split == self._neck_split:
            maps = features
        else:
            start = self._cuts[split]
            x, emitted = resume(self._stages, features, start)
            run_stages(self._stages, x, emitted, start, len(self._stages))
            maps = self._neck(emitted) if self._neck is not None else emitted
        first = next(iter(maps.values()))
        images = shape_only_images(first, metas[0].batch_size_hw, [m.resized_size for m in metas])
        detections = self._predict(self.detector, images, maps)
        return self.detector.transform.postprocess(detections, images.image_sizes, [m.original_size for m in metas])

    @contextmanager
    def at_input_size(self, size: int | None) -> Iterator[None]:
        transform = self.detector.transform
        if size is None:
            yield
            return
        saved = transform.min_size, transform.max_size
        transform.min_size, transform.max_size = (size,), size
        try:
            yield
        finally:
            transform.min_size, transform.max_size = saved

    def full(self, image: Tensor) -> dict[str, Tensor]:
        return self.detector([image])[0]


def shape_only_images(like: Tensor, batch_hw: tuple[int, int], image_sizes: list[tuple[int, int]]) -> ImageList:
    """The ImageList a detector's head and post-processing need, without the images.

    Only the padded batch's shape is read downstream (anchor strides), so a zero-stride
    view stands in for images that were never sent (or never kept).
    """
    return ImageList(like.new_zeros(()).expand(len(image_sizes), 3, *batch_hw), list(image_sizes))


# -- what follows the backbone, per detector family -------------------------------
def predict_rcnn(det: nn.Module, images: ImageList, maps: OrderedDict[str, Tensor]) -> list[dict[str, Tensor]]:
    proposals, _ = det.rpn(images, maps)
    detections, _ = det.roi_heads(maps, proposals, images.image_sizes)
    return detections


def _split_per_level(
    head_outputs: dict[str, Tensor], anchors: list[Tensor], per_level: list[int]
) -> tuple[dict[str, list[Tensor]], list[list[Tensor]]]:
    split_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
    split_anchors = [list(a.split(per_level)) for a in anchors]
    return split_outputs, split_anchors


def predict_retinanet(det: nn.Module, images: ImageList, maps: OrderedDict[str, Tensor]) -> list[dict[str, Tensor]]:
    levels = list(maps.values())
    head_outputs = det.head(levels)
    anchors = det.anchor_generator(images, levels)
    locations = [x.size(2) * x.size(3) for x in levels]
    anchors_per_location = head_outputs["cls_logits"].size(1) // sum(locations)
    per_level = [n * anchors_per_location for n in locations]
    return det.postprocess_detections(*_split_per_level(head_outputs, anchors, per_level), images.image_sizes)


def predict_fcos(det: nn.Module, images: ImageList, maps: OrderedDict[str, Tensor]) -> list[dict[str, Tensor]]:
    levels = list(maps.values())
    head_outputs = det.head(levels)
    anchors = det.anchor_generator(images, levels)
    per_level = [x.size(2) * x.size(3) for x in levels]
    return det.postprocess_detections(*_split_per_level(head_outputs, anchors, per_level), images.image_sizes)


def predict_ssd(det: nn.Module, images: ImageList, maps: OrderedDict[str, Tensor]) -> list[dict[str, Tensor]]:
    levels = list(maps.values())
    head_outputs = det.head(levels)
    anchors = det.anchor_generator(images, levels)
    return det.postprocess_detections(head_outputs, anchors, images.image_sizes)
