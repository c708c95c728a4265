"""`splitrt train bottleneck`: head-network distillation of the bottleneck branches.

Each branch's student (a copy of the teacher's first stages) and encoder run
on the edge, its decoder on the server; the decoder's output is trained to
match the teacher's own tensor at the cut (MSE), with the teacher frozen.
Entropy-coded branches add the rate (bits per input pixel, from the
factorized prior's likelihoods) with a trade-off lambda, plus CompressAI's
auxiliary quantile loss; ``update()`` builds their CDF tables at the end.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.datasets import SHAPES, collate, open_dataset
from ..models import build_model
from ..models.bottleneck import BottleneckDetector
from ..outputs import progress_bar
from . import checkpoint

#: Rate-distortion trade-off per entropy-coded variant: loss = bpp + lambda * relative MSE.
LAMBDAS = {"eb1": 2.0, "eb2": 8.0, "eb3": 32.0, "slim": 8.0}


def train_loader(
    batch_size: int, data_seed: int, shuffle_seed: int, count: int = 6000, data: str = SHAPES
) -> DataLoader:
    """Training images of ``data`` (the shapes world, or a COCO-format JSON), shuffled reproducibly."""
    return DataLoader(
        open_dataset(data, "train", count, seed=data_seed),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        drop_last=True,
        generator=torch.Generator().manual_seed(shuffle_seed),
    )


def sandwich(widths: tuple[float, ...], generator: torch.Generator) -> list[float | None]:
    """The sandwich rule of slimmable networks: the widest, the narrowest and one width between, every step."""
    if len(widths) == 1:
        return [None]
    middle = list(widths[1:-1])
    pick = middle[int(torch.randint(len(middle), (1,), generator=generator))] if middle else None
    return [w for w in (widths[-1], widths[0], pick) if w is not None]


def lambda_for(split: str) -> float | None:
    variant = split.rpartition("/")[2]
    return LAMBDAS.get(variant)


def reset_students(model: BottleneckDetector) -> None:
    """Start every student from the (trained) teacher's own layers."""
    for split in model.branch_splits:
        branch = model.branch(split)
        branch.student.load_state_dict(model.teacher_prefix(branch.config.cut).state_dict())


def distill_branch(
    model: BottleneckDetector,
    split: str,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    train_count: int = 6000,
    log: checkpoint.JsonLog | None = None,
    seed: int = 0,
    train_student: bool = False,
    data: str = SHAPES,
    lam: float | None = None,
) -> dict[str, float]:
    """Train one branch; with ``train_student`` the copied teacher layers on the edge are fine-tuned too.

    A frozen student (the default) keeps the edge's layers identical to the
    teacher's, so the teacher's output at the cut is both the encoder's input
    and the decoder's target, and a step costs a fraction as much.
    """
    branch = model.branch(split)
    for p in branch.student.parameters():
        p.requires_grad_(train_student)
    teacher_prefix = model.teacher_prefix(branch.config.cut).eval()
    lam = lam if lam is not None else lambda_for(split)
    if branch.entropy_bottleneck is not None and lam is None:
        raise ValueError(f"branch {split!r} is entropy-coded: give it a lambda (in its model card)")
    entropy = branch.entropy_bottleneck
    main_params = [p for n, p in branch.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    optimizer = torch.optim.Adam(main_params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    aux_optimizer = torch.optim.Adam([entropy.quantiles], lr=1e-3) if entropy is not None else None
    loader = train_loader(batch_size, seed, seed + 1, train_count, data)
    branch.train()
    if not train_student:
        branch.student.eval()
    width_rng = torch.Generator().manual_seed(seed + 2)
    step, last = 0, {}
    bar = progress_bar(total=steps, desc=f"distill {split}", unit="step")
    while step < steps:
        for images, _ in loader:
            if step >= steps:
                break
            began = time.perf_counter()
            with torch.no_grad():
                batch, _ = model.detector.transform(images)
                x = batch.tensors
                target = teacher_prefix(x)
            loss = torch.zeros(())
            for index, width in enumerate(sandwich(branch.widths, width_rng)):
                coded = branch(x, width) if train_student else branch.code(target, width)
                restored, likelihoods = coded["x_hat"], coded["likelihoods"].get("y")
                part = F.mse_loss(restored, target) / target.var().clamp_min(1e-8)
                rate = torch.zeros(())
                if likelihoods is not None:
                    rate = -torch.log2(likelihoods).sum() / (x.shape[0] * x.shape[-2] * x.shape[-1])
                    part = rate + lam * part
                loss = loss + part
                if index == 0:  # the widest width: what the log reports
                    distortion = F.mse_loss(restored.detach(), target) / target.var().clamp_min(1e-8)
                    bpp = rate.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(main_params, 5.0)
            optimizer.step()
            schedule.step()
            if aux_optimizer is not None:
                aux_optimizer.zero_grad(set_to_none=True)
                aux = branch.aux_loss()
                aux.backward()
                aux_optimizer.step()
            step += 1
            last = {"loss": loss.item(), "relative_mse": distortion.item(), "bpp": bpp.item()}
            bar.update(1)
            bar.set_postfix(mse=f"{last['relative_mse']:.4f}", bpp=f"{last['bpp']:.3f}")
            if log is not None:
                log.write(split=split, step=step, seconds=time.perf_counter() - began, **last)
    bar.close()
    branch.eval()
    branch.update(force=True)
    return last


def train_bottlenecks(
    teacher: Path | None,
    out: Path,
    splits: list[str] | None = None,
    steps: int = 1500,
    batch_size: int = 16,
    lr: float = 1e-3,
    finetune_steps: int = 0,
    card: Path | None = None,
    data: str = SHAPES,
    train_count: int = 6000,
) -> Path:
    """Distil the requested branches (default: every fixed-width one) on top of a teacher.

    The model is shapes_fcos, or the one a model ``card`` declares (its teacher: ``teacher``, else
    the card's own weights).  Writes the whole model (teacher + branches + other parts) to
    ``out/<name>.safetensors`` (and, for a card, ``out/<name>.toml`` pointing at it), keeping
    branches an earlier run already trained there.
    """
    from ..models.zoo import load_weights, save_weights

    loaded_card = None
    if card is not None:
        from ..models.card import load_card

        loaded_card = load_card(card)
        model = loaded_card.build("random")
        teacher = teacher if teacher is not None else loaded_card.weights
        if teacher is None:
            raise ValueError(f"model card {card} names no weights: give the teacher's with --teacher")
        if finetune_steps and "FCOS" not in type(model.detector).__name__:
            raise ValueError("--finetune-steps uses FCOS's own losses; this card's detector is not an FCOS")
    else:
        model = build_model("shapes_fcos", weights="random")
    out.mkdir(parents=True, exist_ok=True)
    existing = out / f"{model.name}.safetensors"
    if existing.is_file():  # keep branches trained earlier; train only those asked for now
        load_weights(model, existing)
    checkpoint.load_detector(model, Path(teacher))  # the teacher asked for wins over one saved earlier
    for p in model.detector.parameters():
        p.requires_grad_(False)
    log = checkpoint.JsonLog(out / "distill-log.jsonl")
    for split in splits or [s for s in model.branch_splits if not model.branch(s).slimmable]:
        branch = model.branch(split)
        branch.student.load_state_dict(model.teacher_prefix(branch.config.cut).state_dict())
        lam = loaded_card.lambda_for(split) if loaded_card is not None else None
        final = (
            distill_branch(model, split, steps, batch_size, lr, train_count, log=log, data=data, lam=lam)
            if steps
            else {}
        )
        if finetune_steps:
            final.update(detection_finetune(model, split, finetune_steps, log=log))
        log.write(split=split, done=True, **final)
        model.update()
        save_weights(model, existing)  # after each branch, so an interrupted run keeps what it finished
        if loaded_card is not None:
            loaded_card.with_weights(existing).save(out / f"{model.name}.toml")
    log.close()
    return existing


def detection_finetune(
    model: BottleneckDetector,
    split: str,
    steps: int,
    batch_size: int = 8,
    lr: float = 2e-4,
    feature_weight: float = 1.0,
    log: checkpoint.JsonLog | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Second stage: tune the encoder/decoder on the detector's own loss through the frozen teacher.

    Loss = detection loss + feature MSE (kept as an anchor) [+ bits per pixel x 1/lambda for entropy branches].
    """
    from collections import OrderedDict

    from ..models.stages import resume, run_stages

    branch = model.branch(split)
    det = model.detector
    stages = model.teacher_stages()
    stop = model._cuts[branch.config.cut]
    name = model.feature_specs(branch.config.cut)[0].name
    teacher_prefix = model.teacher_prefix(branch.config.cut).eval()
    lam = lambda_for(split)
    params = [p for n, p in branch.named_parameters() if not n.endswith(".quantiles") and not n.startswith("student.")]
    optimizer = torch.optim.Adam(params, lr=lr)
    loader = train_loader(batch_size, seed, seed + 5)
    det.eval()
    branch.train()
    branch.student.eval()
    width_rng = torch.Generator().manual_seed(seed + 6)
    step, last = 0, {}
    bar = progress_bar(total=steps, desc=f"finetune {split}", unit="step")
    while step < steps:
        for images, targets in loader:
            if step >= steps:
                break
            with torch.no_grad():
                batch, targets = det.transform(images, targets)
                target = teacher_prefix(batch.tensors)
            total = torch.zeros(())
            for width in sandwich(branch.widths, width_rng):
                coded = branch.code(target, width)
                restored, likelihoods = coded["x_hat"], coded["likelihoods"].get("y")
                x, emitted = resume(stages, OrderedDict([(name, restored)]), stop)
                run_stages(stages, x, emitted, stop, len(stages))
                levels = list(model._neck(emitted).values())
                head_outputs = det.head(levels)
                anchors = det.anchor_generator(batch, levels)
                losses = det.compute_loss(targets, head_outputs, anchors, [v.size(2) * v.size(3) for v in levels])
                detection = sum(losses.values())
                feature = F.mse_loss(restored, target) / target.var().clamp_min(1e-8)
                loss = detection + feature_weight * feature
                if likelihoods is not None and lam:
                    loss = loss + (-torch.log2(likelihoods).sum() / batch.tensors[:, 0].numel()) / lam
                total = total + loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            step += 1
            last = {"finetune_loss": total.item(), "detection_loss": detection.item(), "relative_mse": feature.item()}
            bar.update(1)
            bar.set_postfix(det=f"{last['detection_loss']:.3f}", mse=f"{last['relative_mse']:.4f}")
            if log is not None:
                log.write(split=split, finetune_step=step, **last)
    bar.close()
    branch.eval()
    branch.update(force=True)
    return last
