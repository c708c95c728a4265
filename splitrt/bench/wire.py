"""`splitrt bench wire`: bytes per frame on the wire for every split point x codec.

Bytes are the length of the actual payload each codec produces (what goes in
raw_input_contents), batch size 1, averaged over frames of the synthetic
video; the baseline is the input frame sent as JPEG at quality 90.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from ..codecs import get_codec
from ..edge.frames import to_image_tensor
from ..edge.sources import open_source
from ..models.base import INPUT_SPLIT
from ..models.spec import ModelSpec
from ..outputs import progress_bar

FEATURE_CODECS = ["fp32", "fp32-zstd", "fp16", "fp16-zstd", "int8", "int8-zstd"]
IMAGE_CODECS = ["jpeg:90", "jpeg:50", "webp:80", "png", "raw"]
BASELINE = "jpeg:90"


def run(spec: ModelSpec, source: str = "synthetic:8", frames: int = 8) -> dict[str, Any]:
    model = spec.build()
    images = [to_image_tensor(f) for f in open_source(source, frames)]
    if not images:
        raise ValueError(f"source {source!r} produced no frames")
    combos = [(INPUT_SPLIT, c) for c in IMAGE_CODECS]
    combos += [(s, c) for s in model.split_points if s != INPUT_SPLIT for c in FEATURE_CODECS]
    rows = []
    with torch.inference_mode():
        for split, codec_name in progress_bar(combos, desc="bench wire", unit="config"):
            codec = get_codec(codec_name)
            sizes, elements = [], 0
            for image in images:
                features, _ = model.head(image, split)
                sizes.append(len(codec.encode(features)))
                elements = sum(t.numel() for t in features.values())
            rows.append(
                {
                    "split": split,
                    "codec": codec.name,
                    "tensors": [[n, *t.shape] for n, t in features.items()],
                    "elements": elements,
                    "bytes_mean": statistics.fmean(sizes),
                    "bytes_min": min(sizes),
                    "bytes_max": max(sizes),
                }
            )
    baseline = next(r["bytes_mean"] for r in rows if r["split"] == INPUT_SPLIT and r["codec"] == BASELINE)
    for r in rows:
        r["ratio_to_jpeg90"] = r["bytes_mean"] / baseline
    h, w = images[0].shape[-2:]
    return {
        "benchmark": "wire",
        "model": spec.arch,
        "weights": spec.weights or "untrained (deterministic init)",
        "source": source,
        "frames": len(images),
        "frame_size": [int(h), int(w)],
        "baseline": BASELINE,
        "baseline_bytes": baseline,
        "rows": rows,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"bench wire: {result['model']} ({result['weights']}), {result['frames']} frames of "
        f"{result['frame_size'][1]}x{result['frame_size'][0]} from {result['source']}",
        f"{'split':>12} {'codec':>10} {'elements':>10} {'bytes/frame':>12} {'x JPEG90':>9}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['split']:>12} {r['codec']:>10} {r['elements']:>10} "
            f"{r['bytes_mean']:>12.0f} {r['ratio_to_jpeg90']:>9.2f}"
        )
    return "\n".join(lines)


def main(spec: ModelSpec, source: str, frames: int, out: Path) -> int:
    result = run(spec, source, frames)
    print(format_table(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    return 0
