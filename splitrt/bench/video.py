"""Accuracy of a streamed shapes video: what the demo prints after the edge has run."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

import torch
from PIL import Image

from ..data import shapes
from ..data.datasets import to_tensor
from ..data.evaluate import coco_map, to_coco_results
from ..models import build_model


def ground_truth(frames: int) -> tuple[list, dict]:
    pictures, per_image = zip(*shapes.video(frames))
    return list(pictures), shapes.coco_ground_truth(list(per_image), pictures[0].shape[0])


def report(jsonl: Path, frames: int) -> str:
    """mAP of the streamed results vs the local teacher on the same frames, and bytes vs JPEG q90."""
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    pictures, gt = ground_truth(frames)
    streamed = []
    for r in records:
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            streamed.append(
                {
                    "image_id": r["frame"] + 1,
                    "category_id": d["label"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": d["score"],
                }
            )
    model = build_model("shapes_fcos")
    local, jpeg_bytes = [], []
    with torch.inference_mode():
        for index, picture in enumerate(pictures):
            out = model.full(to_tensor(picture))
            local += to_coco_results(index + 1, out["boxes"], out["scores"], out["labels"])
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, format="JPEG", quality=90)
            jpeg_bytes.append(len(buffer.getvalue()))
    ours, reference = coco_map(gt, streamed), coco_map(gt, local)
    sent = statistics.fmean(r["bytes"] for r in records)
    return (
        f"== accuracy on the {frames} streamed frames (ground truth from the shapes video):\n"
        f"   split {records[0]['split']} / {records[0]['codec']}: mAP@[.5:.95] {ours['map']:.1f}  "
        f"mAP@.5 {ours['map50']:.1f}  at {sent:.0f} bytes/frame\n"
        f"   local teacher (nothing sent): mAP@[.5:.95] {reference['map']:.1f}  mAP@.5 {reference['map50']:.1f}\n"
        f"   the same frames as JPEG q90 would be {statistics.fmean(jpeg_bytes):.0f} bytes/frame "
        f"({statistics.fmean(jpeg_bytes) / max(sent, 1):.1f}x more)"
    )
