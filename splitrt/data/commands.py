"""`splitrt data export`: a synthetic world as a COCO-format folder, the way a user's own data set looks."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="synthetic data sets as COCO-format folders (for --data)")
    actions = data.add_subparsers(dest="data_action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write a world's split as images/ + annotations.json",
        epilog="Example: splitrt data export --world dense --split train --count 6000 --out data/dense-train",
    )
    export.add_argument(
        "--world",
        default="dense",
        choices=["shapes", "dense"],
        help="shapes: the demo world (160 px, 8 classes); dense: 384 px, 16 classes, tiny to large objects, "
        "crowded and occluded (default: %(default)s)",
    )
    export.add_argument("--split", default="train", choices=["train", "val", "test"], help="(default: %(default)s)")
    export.add_argument("--count", type=int, default=1000, help="images (default: %(default)s)")
    export.add_argument("--seed", type=int, default=0, help="world seed (default: %(default)s)")
    export.add_argument("--out", required=True, help="folder to write")
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from .shapes import WORLDS, export_coco

    path = export_coco(WORLDS[args.world], args.split, args.count, args.out, seed=args.seed)
    print(f"{args.count} {args.world} {args.split} images -> {path.parent}/images, annotations {path}")
    return 0
