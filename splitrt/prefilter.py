"""The on-device prefilter: does this frame hold anything of interest at all?

A small classifier on the teacher's features at the prefilter's cut (the
stages the edge runs anyway for a split there, so the prefilter adds only
its own three convolutions), trained on the shapes set's empty / non-empty
labels.
Frames scoring under the threshold are not sent; the threshold is
calibrated on the validation split so that at least 99% of the frames with
objects still go through.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Prefilter(nn.Module):
    def __init__(self, in_channels: int, hidden: int = 64, first_stride: int = 1) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, hidden, first_stride), *block(hidden, hidden, 1), *block(hidden, hidden, 2)
        )
        self.classifier = nn.Linear(2 * hidden, 1)
        # Saved with the weights; set by calibration, overridable per client.
        self.register_buffer("threshold", torch.tensor(0.5))

    def forward(self, features: Tensor) -> Tensor:
        """Logits, one per frame; max- and mean-pooling so one small object anywhere can fire it."""
        x = self.features(features)
        pooled = torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)
        return self.classifier(pooled).squeeze(1)

    def keep(self, score: float, threshold: float | None = None) -> bool:
        return score >= (float(self.threshold) if threshold is None else threshold)


def calibrate_threshold(scores: Tensor, has_objects: Tensor, recall: float = 0.99) -> float:
    """The highest threshold that still keeps ``recall`` of the frames with objects."""
    positives = torch.sort(scores[has_objects]).values
    if positives.numel() == 0:
        raise ValueError("calibration needs frames with objects")
    allowed_misses = int((1.0 - recall) * positives.numel())
    return float(positives[allowed_misses])
