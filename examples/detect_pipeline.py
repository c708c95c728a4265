"""A detection pipeline that uses splitrt's Python client and writes the frames with their boxes drawn.

    python examples/detect_pipeline.py photos/images --server 127.0.0.1:8001 --out-dir annotated/
    python examples/detect_pipeline.py clip.mp4 --split input --codec jpeg:80

The model's head runs here; the tail runs on the server; boxes come back in this image's
pixel coordinates, with the model's class names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import splitrt
from splitrt.edge.sources import open_source
from splitrt.models.spec import parse_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="image folder, image, video file, shapes-video:N or synthetic:N")
    parser.add_argument("--server", default="127.0.0.1:8001")
    parser.add_argument("--model", default="shapes_fcos")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", default=None, help="default: the model's own bottleneck")
    parser.add_argument("--codec", default="auto", help="default: the split's own codec")
    parser.add_argument("--min-score", type=float, default=0.3)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--out-dir", default="annotated")
    args = parser.parse_args()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = list(open_source(args.source, args.max_frames))
    with splitrt.connect(
        args.server,
        args.model,
        split=args.split,
        codec=args.codec,
        model_options=parse_options(args.model_option),
        score_threshold=args.min_score,
    ) as client:
        client.wait_ready()
        for image, result in zip(frames, client.stream(frames)):
            if not result.ok:
                print(f"frame {result.frame_id}: {result.error}")
                continue
            path = out_dir / f"frame_{result.frame_id:05d}.png"
            result.draw(image).save(path)
            names = ", ".join(result.names) or "nothing"
            print(f"frame {result.frame_id}: {names} ({result.wire_bytes} bytes) -> {path}")


if __name__ == "__main__":
    main()
