"""torchvision classifiers cut between stages."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import INPUT_SPLIT, FeatureSpec, FrameMeta, SplitModel
from .stages import CARRY, Stage, cut_channels, run_stages

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassificationSplitModel(SplitModel):
    """Resize to a square, normalise, then run the stages; outputs ``logits``."""

    task = "classification"

    def __init__(self, name: str, classifier: nn.Module, stages: list[Stage], cuts: dict[str, int], size: int = 224):
        super().__init__(name)
        self.classifier = classifier.eval()
        self._stages = stages
        self._cuts = cuts
        self.size = size
        self.register_buffer("_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            probe = torch.zeros(1, 3, 64, 64)
            self._specs = {INPUT_SPLIT: [FeatureSpec("image", 3)]}
            for split, stop in cuts.items():
                self._specs[split] = [FeatureSpec(n, c, s) for n, c, s in cut_channels(stages, probe, stop)]

    @property
    def split_points(self) -> list[str]:
        return [INPUT_SPLIT, *self._cuts]

    @property
    def output_names(self) -> list[str]:
        return ["logits"]

    def max_input_hw(self) -> tuple[int, int]:
        return self.size, self.size

    def feature_specs(self, split: str) -> list[FeatureSpec]:
        self.check_split(split)
        return self._specs[split]

    def check_features(self, features: OrderedDict[str, Tensor], split: str) -> None:
        # Features after global pooling are [1, C]; give them a spatial 1x1 view for the check.
        flat = OrderedDict((k, v[..., None, None] if v.dim() == 2 else v) for k, v in features.items())
        super().check_features(flat, split)

    def _preprocess(self, image: Tensor) -> Tensor:
        x = F.interpolate(image.unsqueeze(0), size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self._mean) / self._std

    def head(self, image: Tensor, split: str) -> tuple[OrderedDict[str, Tensor], FrameMeta]:
        self.check_split(split)
        original = (int(image.shape[-2]), int(image.shape[-1]))
        meta = FrameMeta(original, (self.size, self.size), (self.size, self.size))
        if split == INPUT_SPLIT:
            return OrderedDict(image=image.unsqueeze(0)), meta
        x = run_stages(self._stages, self._preprocess(image), OrderedDict(), 0, self._cuts[split])
        return OrderedDict([(CARRY, x)]), meta

    def tail(self, features: OrderedDict[str, Tensor], meta: FrameMeta, split: str) -> dict[str, Tensor]:
        self.check_split(split)
        if split == INPUT_SPLIT:
            return self.full(features["image"][0])
        x = run_stages(self._stages, features[CARRY], OrderedDict(), self._cuts[split], len(self._stages))
        return {"logits": x}

    def tail_batch(
        self, frames: list[tuple[OrderedDict[str, Tensor], FrameMeta]], split: str
    ) -> list[dict[str, Tensor]]:
        self.check_split(split)
        if split == INPUT_SPLIT or len(frames) == 1:
            return super().tail_batch(frames, split)
        carry = torch.cat([features[CARRY] for features, _ in frames])
        logits = run_stages(self._stages, carry, OrderedDict(), self._cuts[split], len(self._stages))
        return [{"logits": row.unsqueeze(0)} for row in logits]

    def full(self, image: Tensor) -> dict[str, Tensor]:
        return {"logits": self.classifier(self._preprocess(image))}
