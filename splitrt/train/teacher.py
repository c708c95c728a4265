"""`splitrt train teacher`: train the demo detector on the synthetic shapes set, resumably."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data.datasets import SHAPES, collate, open_dataset
from ..models import build_model
from ..models.zoo import save_weights
from ..outputs import progress_bar
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
    card: Path | None = None,
    data: str = SHAPES,
    val_data: str | None = None,
) -> dict[str, float]:
    """Train (or resume from ``out/last.*``); writes ``out/teacher.safetensors``.

    ``arch`` from scratch, or the detector of a model ``card``, fine-tuned from the card's weights
    when it has some (e.g. imported torchvision COCO weights), on ``data`` (the shapes world or a
    COCO-format JSON).  mAP is measured on ``val_data`` (shapes: its own val split); a card also
    gets ``out/<name>.toml`` pointing at the new weights.
    """
    torch.manual_seed(seed)
    loaded_card = None
    if card is not None:
        from ..models.card import load_card

        loaded_card = load_card(card)
        model = loaded_card.build(loaded_card.weights if loaded_card.weights is not None else "random")
    else:
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
    dataset = open_dataset(data, "train", train_count, seed=seed)
    generator = torch.Generator().manual_seed(seed + start)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, collate_fn=collate, drop_last=True, generator=generator
    )
    step = start
    bar = progress_bar(total=steps, initial=start, desc="train teacher", unit="step")
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
    val_source = val_data or (SHAPES if data == SHAPES else None)
    metrics: dict[str, float] = {}
    if val_source is not None:  # never the training images
        val = open_dataset(val_source, "val", val_count, seed=seed)
        metrics = detection_map(lambda i: model.full(val[i][0]), val, desc="val mAP")
    weights = out / "teacher.safetensors"
    save_weights(model, weights)
    if loaded_card is not None:
        loaded_card.with_weights(weights).save(out / f"{model.name}.toml")
    log.write(step=step, val=metrics)
    log.close()
    return metrics
