"""`splitrt train ...`: the trainers' flags; each trainer's module is imported only to run it."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train the demo detector and its bottlenecks (resumable)")
    trainers = train.add_subparsers(dest="trainer", required=True, metavar="WHAT")

    teacher = trainers.add_parser("teacher", help="train the shapes_fcos teacher from scratch on the synthetic set")
    teacher.add_argument(
        "--out", default="runs/teacher", help="checkpoint folder; resumes from it (default: %(default)s)"
    )
    teacher.add_argument("--steps", type=int, default=8000, help="optimiser steps (default: %(default)s)")
    teacher.add_argument("--batch-size", type=int, default=8, help="images per step (default: %(default)s)")
    teacher.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    teacher.add_argument("--train-count", type=int, default=6000, help="training images (default: %(default)s)")
    _data_flags(teacher)
    teacher.add_argument(
        "--val-data", help="COCO-format JSON to measure mAP on (default: the shapes val split for --data shapes)"
    )
    teacher.set_defaults(handler=_teacher)

    bottleneck = trainers.add_parser("bottleneck", help="distil the bottleneck branches of shapes_fcos from a teacher")
    bottleneck.add_argument(
        "--teacher",
        help="teacher weights (default: runs/teacher/teacher.safetensors, or the card's weights with --model-card)",
    )
    bottleneck.add_argument("--out", default="runs/bottleneck", help="output folder (default: %(default)s)")
    bottleneck.add_argument("--split", action="append", help="branch to train, e.g. features.6/eb2 (default: all)")
    bottleneck.add_argument("--steps", type=int, default=1500, help="steps per branch (default: %(default)s)")
    bottleneck.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    bottleneck.add_argument(
        "--finetune-steps", type=int, default=0, help="second stage on the detection loss, steps per branch"
    )
    bottleneck.add_argument("--train-count", type=int, default=6000, help="training images (default: %(default)s)")
    _data_flags(bottleneck)
    bottleneck.set_defaults(handler=_bottleneck)

    slim = trainers.add_parser("slimmable", help="distil the slimmable bottleneck (sandwich rule, entropy-coded)")
    slim.add_argument("--teacher", default="runs/teacher/teacher.safetensors", help="teacher weights")
    slim.add_argument("--out", default="runs/bottleneck", help="output folder (default: %(default)s)")
    slim.add_argument("--steps", type=int, default=1500, help="steps (default: %(default)s)")
    slim.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    slim.add_argument("--finetune-steps", type=int, default=0, help="second stage on the detection loss")
    slim.set_defaults(handler=_slimmable, split=["features.6/slim"])

    prefilter = trainers.add_parser("prefilter", help="train the prefilter and calibrate its threshold on val")
    prefilter.add_argument(
        "--model",
        help="model weights to extend, rewritten (default: runs/bottleneck/shapes_fcos.safetensors, or the "
        "card's weights with --model-card)",
    )
    prefilter.add_argument("--steps", type=int, default=3000, help="steps (default: %(default)s)")
    prefilter.add_argument("--train-count", type=int, default=12000, help="training images (default: %(default)s)")
    prefilter.add_argument("--recall", type=float, default=0.99, help="recall of frames with objects to keep")
    _data_flags(prefilter)
    prefilter.add_argument("--val-data", help="COCO-format JSON to calibrate on (default: shapes' val split)")
    prefilter.set_defaults(handler=_prefilter)

    early_exit = trainers.add_parser(
        "exit", help="train the early-exit detector on features.6 (the device's own result for hedged frames)"
    )
    early_exit.add_argument(
        "--model",
        help="model weights to extend, rewritten (default: runs/bottleneck/shapes_fcos.safetensors, or the "
        "card's weights with --model-card)",
    )
    early_exit.add_argument("--steps", type=int, default=5000, help="steps (default: %(default)s)")
    early_exit.add_argument("--batch-size", type=int, default=32, help="images per step (default: %(default)s)")
    early_exit.add_argument("--train-count", type=int, default=6000, help="training images (default: %(default)s)")
    _data_flags(early_exit)
    early_exit.add_argument("--val-data", help="COCO-format JSON to measure mAP on (default: shapes' val split)")
    early_exit.set_defaults(handler=_exit)


def _data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default="shapes",
        help="training data: 'shapes' (the synthetic world) or a COCO-format annotations .json, its images in "
        "an images/ folder beside it (default: %(default)s)",
    )
    parser.add_argument("--model-card", help="train the detector / branches a model card declares (TOML)")


def _weights_to_extend(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The weights file a prefilter/exit trainer rewrites, and the card it belongs to (if any)."""
    card = Path(args.model_card) if args.model_card else None
    if args.model:
        return Path(args.model), card
    if card is None:
        return Path("runs/bottleneck/shapes_fcos.safetensors"), None
    from ..models.card import load_card

    weights = load_card(card).weights
    if weights is None:
        raise SystemExit(f"model card {card} names no weights to extend: train its teacher and branches first")
    return weights, card


def _teacher(args: argparse.Namespace) -> int:
    from .teacher import train_teacher

    metrics = train_teacher(
        Path(args.out),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        train_count=args.train_count,
        card=Path(args.model_card) if args.model_card else None,
        data=args.data,
        val_data=args.val_data,
    )
    if metrics:
        print(f"teacher val mAP@[.5:.95] {metrics['map']:.1f}  mAP@.5 {metrics['map50']:.1f}  -> {args.out}")
    else:
        print(f"teacher -> {args.out} (no --val-data: mAP not measured)")
    return 0


def _bottleneck(args: argparse.Namespace) -> int:
    from .bottleneck import train_bottlenecks

    teacher = args.teacher or (None if args.model_card else "runs/teacher/teacher.safetensors")
    path = train_bottlenecks(
        Path(teacher) if teacher else None,
        Path(args.out),
        args.split,
        args.steps,
        args.batch_size,
        finetune_steps=args.finetune_steps,
        card=Path(args.model_card) if args.model_card else None,
        data=args.data,
        train_count=args.train_count,
    )
    print(f"bottlenecks written to {path}")
    return 0


def _slimmable(args: argparse.Namespace) -> int:
    from .bottleneck import train_bottlenecks

    path = train_bottlenecks(
        Path(args.teacher), Path(args.out), args.split, args.steps, args.batch_size, finetune_steps=args.finetune_steps
    )
    print(f"slimmable bottleneck written to {path}")
    return 0


def _prefilter(args: argparse.Namespace) -> int:
    from ..models import save_weights
    from .checkpoint import model_to_extend
    from .prefilter import train_prefilter

    weights, card = _weights_to_extend(args)
    model = model_to_extend(weights, "prefilter.", card)  # the prefilter is trained afresh
    metrics = train_prefilter(
        model,
        steps=args.steps,
        train_count=args.train_count,
        recall=args.recall,
        log_path=weights.parent / "prefilter-log.jsonl",
        data=args.data,
        val_data=args.val_data,
    )
    save_weights(model, weights)
    print(
        f"prefilter threshold {metrics['threshold']:.4f}: val recall {metrics['val_recall']:.3f}, "
        f"empty frames filtered {metrics['val_empty_filtered']:.3f} -> {weights}"
    )
    return 0


def _exit(args: argparse.Namespace) -> int:
    from ..models import save_weights
    from .checkpoint import model_to_extend
    from .early_exit import train_exit

    weights, card = _weights_to_extend(args)
    model = model_to_extend(weights, "early_exit.", card)  # the exit is trained afresh
    metrics = train_exit(
        model,
        steps=args.steps,
        batch_size=args.batch_size,
        train_count=args.train_count,
        log_path=weights.parent / "exit-log.jsonl",
        data=args.data,
        val_data=args.val_data,
    )
    save_weights(model, weights)
    print(f"early exit: val mAP {metrics['map']:.1f} (mAP50 {metrics['map50']:.1f}) -> {weights}")
    return 0
