"""The on-device prefilter: does this frame hold anything of interest at all?

A small classifier on the teacher's early features (the first stages the
edge runs anyway), trained on the shapes set's empty / non-empty labels.
Frames scoring under the threshold are not sent; the threshold is
calibrated on the validation split so that at least 99% of the frames with
objects still go through.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Prefilter(nn.Module):
    def __init__(self, in_channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
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
