"""`splitrt train prefilter`: train the empty / non-empty classifier and calibrate its threshold."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.datasets import ShapesDetection, collate
from ..models.bottleneck import BottleneckDetector
from ..prefilter import calibrate_threshold
from . import checkpoint


@torch.no_grad()
def prefilter_scores(model: BottleneckDetector, dataset: ShapesDetection, batch_size: int = 32):
    """Scores and has-objects labels of every image of ``dataset``."""
    model.prefilter.eval()
    scores, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    for images, targets in loader:
        batch, _ = model.detector.transform(images)
        scores.append(torch.sigmoid(model.prefilter(model.prefilter_features(batch.tensors))))
        labels.append(torch.tensor([len(t["labels"]) > 0 for t in targets]))
    return torch.cat(scores), torch.cat(labels)


def train_prefilter(
    model: BottleneckDetector,
    steps: int = 800,
    batch_size: int = 32,
    lr: float = 2e-3,
    train_count: int = 6000,
    val_count: int = 400,
    recall: float = 0.99,
    log_path: Path | None = None,
) -> dict[str, float]:
    prefilter = model.prefilter
    optimizer = torch.optim.AdamW(prefilter.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    loader = DataLoader(
        ShapesDetection("train", train_count),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        drop_last=True,
        generator=torch.Generator().manual_seed(3),
    )
    log = checkpoint.JsonLog(log_path) if log_path else None
    prefilter.train()
    step = 0
    bar = tqdm(total=steps, desc="train prefilter", unit="step")
    while step < steps:
        for images, targets in loader:
            if step >= steps:
                break
            with torch.no_grad():
                batch, _ = model.detector.transform(images)
                features = model.prefilter_features(batch.tensors)
            labels = torch.tensor([float(len(t["labels"]) > 0) for t in targets])
            loss = F.binary_cross_entropy_with_logits(prefilter(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if log:
                log.write(step=step, loss=loss.item())
    bar.close()
    scores, has_objects = prefilter_scores(model, ShapesDetection("val", val_count))
    threshold = calibrate_threshold(scores, has_objects, recall)
    prefilter.threshold.fill_(threshold)
    kept = scores >= threshold
    metrics = {
        "threshold": threshold,
        "val_recall": float(kept[has_objects].float().mean()),
        "val_empty_filtered": float((~kept[~has_objects]).float().mean()),
    }
    if log:
        log.write(calibration=metrics)
        log.close()
    return metrics
