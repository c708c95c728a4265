"""`splitrt train exit`: train the early-exit detector on the frozen teacher's tensor at its cut."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..data.datasets import SHAPES, collate, open_dataset
from ..models.bottleneck import BottleneckDetector
from ..models.detection import shape_only_images
from ..outputs import progress_bar
from . import checkpoint
from .evaluation import detection_map
from .prefilter import _val_source, equal_sized
from .teacher import hflip


@torch.no_grad()
def cached_cut_features(
    model: BottleneckDetector, dataset, flips: bool = True, batch_size: int = 64
) -> tuple[Tensor, list[dict[str, Tensor]], tuple[int, int]]:
    """The teacher's tensors at the exit's cut (fp16) with the transformed targets, plus mirrored copies.

    The teacher is frozen, so this runs once instead of every epoch; a mirrored image gives a
    different tensor than a mirrored tensor, hence the second pass.
    """
    prefix = model.teacher_prefix(model.early_exit.cut).eval()
    features: list[Tensor] = []
    targets: list[dict[str, Tensor]] = []
    size: tuple[int, int] = (0, 0)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    where = getattr(dataset, "split", "data")
    for images, labelled in progress_bar(loader, desc=f"exit features ({where})", unit="batch", leave=False):
        passes = [(list(images), [dict(t) for t in labelled])]
        if flips:
            mirrored, mirrored_targets = list(images), [dict(t) for t in labelled]
            hflip(mirrored, mirrored_targets, torch.Generator().manual_seed(0), probability=1.0)
            passes.append((mirrored, mirrored_targets))
        for batch_images, batch_targets in passes:
            batch, transformed = model.detector.transform(batch_images, batch_targets)
            size = tuple(batch.tensors.shape[-2:])
            features.append(prefix(batch.tensors).half())
            targets += [{"boxes": t["boxes"], "labels": t["labels"]} for t in transformed]
    return torch.cat(equal_sized(features)), targets, size


def train_exit(
    model: BottleneckDetector,
    steps: int = 4000,
    batch_size: int = 32,
    lr: float = 3e-3,
    train_count: int = 6000,
    val_count: int = 400,
    log_path: Path | None = None,
    seed: int = 0,
    data: str = SHAPES,
    val_data: str | None = None,
) -> dict[str, float]:
    """FCOS losses on cached cut features; returns the exit's mAP on ``val_data`` (shapes: its val split)."""
    if model.early_exit is None:
        raise ValueError(f"model {model.name!r} has no early exit to train")
    torch.manual_seed(seed)
    exit_module = model.early_exit
    optimizer = torch.optim.AdamW(exit_module.parameters(), lr=lr, weight_decay=1e-4)
    warmup = min(200, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )
    val_source = _val_source(data, val_data)
    features, targets, size = cached_cut_features(model, open_dataset(data, "train", train_count, seed=seed))
    generator = torch.Generator().manual_seed(seed + 1)
    log = checkpoint.JsonLog(log_path) if log_path else None
    exit_module.train()
    bar = progress_bar(range(steps), desc="train exit", unit="step")
    for step in bar:
        index = torch.randint(0, len(features), (batch_size,), generator=generator)
        batch_targets = [targets[i] for i in index.tolist()]
        images = shape_only_images(features, size, [size] * batch_size)
        losses = exit_module(images, features[index].float(), batch_targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(exit_module.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if log:
            log.write(step=step + 1, loss=loss.item(), **{k: v.item() for k, v in losses.items()})
    exit_module.eval()
    model._fingerprint = None
    val = open_dataset(val_source, "val", val_count, seed=seed)
    metrics = detection_map(lambda i: model.exit_detect(val[i][0]), val, desc="exit val mAP")
    if log:
        log.write(val=metrics)
        log.close()
    return metrics
