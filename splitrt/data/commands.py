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
    video = actions.add_parser(
        "video",
        help="write the shapes world's video (what shapes_fcos was trained for) as an MP4 file",
        epilog="Example: splitrt data video --frames 100 --out clip.mp4",
    )
    video.add_argument("--frames", type=int, default=100, help="frames (default: %(default)s)")
    video.add_argument("--fps", type=int, default=10, help="frames per second (default: %(default)s)")
    video.add_argument("--seed", type=int, default=7, help="video seed (default: %(default)s)")
    video.add_argument("--out", default="clip.mp4", help="MP4 file to write (default: %(default)s)")
    video.set_defaults(handler=_video)


def _export(args: argparse.Namespace) -> int:
    from .shapes import WORLDS, export_coco

    path = export_coco(WORLDS[args.world], args.split, args.count, args.out, seed=args.seed)
    print(f"{args.count} {args.world} {args.split} images -> {path.parent}/images, annotations {path}")
    return 0


def _video(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..extras import MissingExtra, require
    from .shapes import video

    try:
        av = require("av", "video", "writing a video")
    except MissingExtra as exc:
        print(f"splitrt data video: {exc}")
        return 2
    if args.frames < 1:
        print("splitrt data video: --frames must be at least 1")
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=args.fps)
        stream.pix_fmt = "yuv420p"
        for index, (frame, _) in enumerate(video(args.frames, seed=args.seed)):
            if index == 0:
                stream.height, stream.width = frame.shape[0] - frame.shape[0] % 2, frame.shape[1] - frame.shape[1] % 2
            picture = av.VideoFrame.from_ndarray(frame[: stream.height, : stream.width], format="rgb24")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    print(f"{args.frames} frames of the shapes video at {args.fps} fps -> {out}")
    return 0
