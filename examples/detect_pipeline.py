"""A detection pipeline that uses splitrt's Python client and draws the boxes.

    python examples/detect_pipeline.py photos/ --server 127.0.0.1:8001 --out-dir annotated/
    python examples/detect_pipeline.py clip.mp4 --split input --codec jpeg:80

The model's head runs here; the tail runs on the server; boxes come back in
this image's pixel coordinates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

import splitrt
from splitrt.edge.sources import open_source
from splitrt.models.spec import parse_options


def draw(image, result, min_score: float) -> Image.Image:
    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    for det in result.detections():
        if det["score"] < min_score:
            continue
        pen.rectangle(det["box"], outline=(255, 40, 40), width=2)
        pen.text((det["box"][0] + 2, det["box"][1] + 1), f"{det['label']}:{det['score']:.2f}", fill=(255, 255, 0))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="image folder, image, video file or synthetic:N")
    parser.add_argument("--server", default="127.0.0.1:8001")
    parser.add_argument("--model", default="fasterrcnn_mobilenet_v3_large_320_fpn")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", default=None)
    parser.add_argument("--codec", default="int8-zstd")
    parser.add_argument("--min-score", type=float, default=0.3)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--out-dir", default="annotated")
    args = parser.parse_args()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = list(open_source(args.source, args.max_frames))
    with splitrt.connect(
        args.server, args.model, split=args.split, codec=args.codec, model_options=parse_options(args.model_option)
    ) as client:
        client.wait_ready()
        for image, result in zip(frames, client.stream(frames)):
            if not result.ok:
                print(f"frame {result.frame_id}: {result.error}")
                continue
            path = out_dir / f"frame_{result.frame_id:05d}.png"
            draw(image, result, args.min_score).save(path)
            print(f"frame {result.frame_id}: {result.num_detections} detections, {result.wire_bytes} bytes -> {path}")


if __name__ == "__main__":
    main()
