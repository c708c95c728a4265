"""`splitrt export head`: the edge's head for other runtimes; torch is imported only to run it."""

from __future__ import annotations

import argparse

from ..defaults import DEMO_MODEL, DEMO_SPLIT


def register_export(exports: argparse._SubParsersAction) -> None:
    head = exports.add_parser("head", help="the edge's head as TorchScript (for libtorch devices)")
    head.add_argument("--model", default=DEMO_MODEL, help="model (default: %(default)s)")
    head.add_argument("--weights", help="safetensors weights (default: the shipped ones)")
    head.add_argument("--split", default=DEMO_SPLIT, help="split point (default: %(default)s)")
    head.add_argument("--width", type=float, help="width of a slimmable split (default: full)")
    head.add_argument("--out", default="runs/head.pt", help="TorchScript file (default: %(default)s)")

    head.set_defaults(handler=_export_head)


def _export_head(args: argparse.Namespace) -> int:
    from ..data.datasets import ShapesDetection
    from ..models.spec import parse_model_flag
    from .export import export_head

    model = parse_model_flag(args.model, args.weights).build()
    example = ShapesDetection("val", 1)[0][0]
    path = export_head(model, args.split, example, args.out, args.width)
    print(f"head of {args.model} at {args.split} -> {path} (input: model.preprocess(image)[0])")
    return 0
