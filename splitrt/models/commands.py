"""`splitrt import-weights`: a torchvision `.pth` checkpoint into safetensors for a zoo model or a card."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import-weights",
        help="convert a torchvision .pth checkpoint (tensors only) into safetensors for a zoo model or card",
        description="Convert a torchvision checkpoint, e.g. COCO weights downloaded on another machine, into "
        "the safetensors file splitrt-server and splitrt-edge load (--weights, or a card's weights).",
        epilog="Example: splitrt import-weights fasterrcnn_mobilenet_v3_large_320_fpn_coco.pth "
        "--arch fasterrcnn_mobilenet_v3_large_320_fpn --out weights/frcnn320.safetensors",
    )
    parser.add_argument("checkpoint", help="the .pth file (a state dict, or one nested under 'model'/'state_dict')")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="zoo architecture the checkpoint is for (see `splitrt models`)")
    which.add_argument("--model-card", help="a model card whose base architecture the checkpoint is for")
    parser.add_argument(
        "--model-option", action="append", default=[], metavar="KEY=VALUE", help="builder option, e.g. num_classes=4"
    )
    parser.add_argument("--out", required=True, help="safetensors file to write")
    parser.set_defaults(handler=_import_weights)


def _import_weights(args: argparse.Namespace) -> int:
    import sys

    from .importing import CheckpointError, import_weights
    from .spec import parse_options

    try:
        model = import_weights(
            Path(args.checkpoint),
            Path(args.out),
            arch=args.arch,
            options=parse_options(args.model_option),
            card=Path(args.model_card) if args.model_card else None,
        )
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"splitrt import-weights: {exc}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint} -> {args.out} ({model.name}, fingerprint {model.fingerprint()})")
    return 0
