"""`splitrt train prefilter`: train the empty / non-empty classifier and calibrate its threshold."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from ..data.datasets import SHAPES, collate, open_dataset
from ..models.bottleneck import BottleneckDetector
from ..outputs import progress_bar
from ..prefilter import calibrate_threshold
from . import checkpoint


@torch.no_grad()
def cut_features(model: BottleneckDetector, dataset, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """The teacher's tensors at the prefilter's cut (fp16, to fit thousands in memory) and has-objects labels.

    The teacher is frozen, so they are computed once instead of every epoch.
    """
    features, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    where = getattr(dataset, "split", "data")
    for images, targets in progress_bar(loader, desc=f"prefilter features ({where})", unit="batch", leave=False):
        batch, _ = model.detector.transform(images)
        features.append(model.prefilter_features(batch.tensors).half())
        labels.append(torch.tensor([len(t["labels"]) > 0 for t in targets]))
    return torch.cat(equal_sized(features)), torch.cat(labels)


def equal_sized(features: list[Tensor]) -> list[Tensor]:
    """Cached cut features must share one size (the training samples batches from them)."""
    sizes = {tuple(f.shape[-2:]) for f in features}
    if len(sizes) > 1:
        raise ValueError(
            f"the images resize to different shapes at the cut ({sorted(sizes)}): prefilter and exit training "
            "cache features of equal-sized images; give them images of one size (or one aspect ratio)"
        )
    return features


@torch.no_grad()
def prefilter_scores(model: BottleneckDetector, features: Tensor, batch_size: int = 256) -> Tensor:
    model.prefilter.eval()
    return torch.cat(
        [
            torch.sigmoid(model.prefilter(features[i : i + batch_size].float()))
            for i in range(0, len(features), batch_size)
        ]
    )


def train_prefilter(
    model: BottleneckDetector,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 2e-3,
    train_count: int = 8000,
    val_count: int = 1200,
    recall: float = 0.99,
    log_path: Path | None = None,
    seed: int = 0,
    data: str = SHAPES,
    val_data: str | None = None,
) -> dict[str, float]:
    """Binary cross-entropy on cached cut features with horizontal flips; threshold calibrated on val
    (``val_data``; the shapes world's own val split by default)."""
    torch.manual_seed(seed)
    prefilter = model.prefilter
    optimizer = torch.optim.AdamW(prefilter.parameters(), lr=lr, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    val_source = _val_source(data, val_data)
    features, has_objects = cut_features(model, open_dataset(data, "train", train_count))
    targets = has_objects.float()
    generator = torch.Generator().manual_seed(seed + 1)
    log = checkpoint.JsonLog(log_path) if log_path else None
    prefilter.train()
    bar = progress_bar(range(steps), desc="train prefilter", unit="step")
    for step in bar:
        index = torch.randint(0, len(features), (batch_size,), generator=generator)
        x = features[index].float()
        if torch.rand((), generator=generator) < 0.5:
            x = x.flip(3)
        loss = F.binary_cross_entropy_with_logits(prefilter(x), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if log:
            log.write(step=step + 1, loss=loss.item())
    val_features, val_objects = cut_features(model, open_dataset(val_source, "val", val_count))
    scores = prefilter_scores(model, val_features)
    threshold = calibrate_threshold(scores, val_objects, recall)
    prefilter.threshold.fill_(threshold)
    kept = scores >= threshold
    metrics = {
        "threshold": threshold,
        "val_recall": float(kept[val_objects].float().mean()),
        "val_empty_filtered": float((~kept[~val_objects]).float().mean()),
    }
    if log:
        log.write(calibration=metrics)
        log.close()
    return metrics


def _val_source(data: str, val_data: str | None) -> str:
    """Calibration and evaluation data: never the training images."""
    if val_data is not None:
        return val_data
    if data == SHAPES:
        return SHAPES
    raise ValueError("with --data other than shapes, give --val-data (images training never saw)")
