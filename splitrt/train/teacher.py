"""`splitrt train teacher`: train the demo detector on the synthetic shapes set, resumably."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.datasets import ShapesDetection, collate
from ..models import build_model
from ..models.zoo import save_weights
from . import checkpoint
from .evaluation import detection_map


def hflip(
    images: list[torch.Tensor], targets: list[dict], generator: torch.Generator, probability: float = 0.5
) -> None:
    for i, (image, target) in enumerate(zip(images, targets)):
        if torch.rand((), generator=generator) < probability:
            images[i] = image.flip(-1)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = image.shape[-1] - target["boxes"][:, [2, 0]]
            target["boxes"] = boxes


def train_teacher(
    out: Path,
    arch: str = "shapes_fcos",
    steps: int = 6000,
    batch_size: int = 8,
    lr: float = 2e-3,
    train_count: int = 6000,
    val_count: int = 200,
    checkpoint_every: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Train from scratch (or resume from ``out/last.*``); writes ``out/teacher.safetensors``."""
    torch.manual_seed(seed)
    model = build_model(arch, weights="random")
    detector = model.detector.train()
    optimizer = torch.optim.AdamW(detector.parameters(), lr=lr, weight_decay=1e-4)
    warmup = min(300, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))),
    )
    start = checkpoint.resume(out, model, optimizer, scheduler, load=checkpoint.load_detector)
    log = checkpoint.JsonLog(out / "train-log.jsonl")
    data = ShapesDetection("train", train_count, seed=seed)
    generator = torch.Generator().manual_seed(seed + start)
    loader = DataLoader(
        data, batch_size=batch_size, shuffle=True, collate_fn=collate, drop_last=True, generator=generator
    )
    step = start
    bar = tqdm(total=steps, initial=start, desc="train teacher", unit="step")
    while step < steps:
        for images, targets in loader:
            if step >= steps:
                break
            hflip(images, targets, generator)
            began = time.perf_counter()
            losses = detector(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(detector.parameters(), 10.0)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            log.write(
                step=step,
                loss=loss.item(),
                lr=scheduler.get_last_lr()[0],
                seconds=time.perf_counter() - began,
                **{k: v.item() for k, v in losses.items()},
            )
            if step % checkpoint_every == 0 or step == steps:
                checkpoint.save(out, model, optimizer, scheduler, step)
    bar.close()
    model.eval()
    val = ShapesDetection("val", val_count, seed=seed)
    metrics = detection_map(lambda i: model.full(val[i][0]), val, desc="val mAP")
    save_weights(model, out / "teacher.safetensors")
    log.write(step=step, val=metrics)
    log.close()
    return metrics
