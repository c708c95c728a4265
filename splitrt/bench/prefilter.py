"""`splitrt bench prefilter`: what the prefilter saves and what it costs in accuracy, on the test split.

End to end through one split and codec (default the demo's): every frame
either goes head -> bitstream -> tail, or is dropped by the prefilter and
counts as an empty detection list.  mAP is compared with the prefilter off
on the same frames.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ..codecs import get_codec
from ..data.datasets import ShapesDetection
from ..data.evaluate import coco_map, to_coco_results
from ..models import build_model
from ..outputs import progress_bar


@torch.inference_mode()
def run(count: int, split: str, codec_name: str, threshold: float | None = None) -> dict[str, Any]:
    model = build_model("shapes_fcos")
    if not model.trained:
        raise ValueError("bench prefilter needs the trained shapes_fcos weights")
    threshold = float(model.prefilter.threshold) if threshold is None else threshold
    dataset = ShapesDetection("test", count)
    codec = get_codec(codec_name, model, split)
    results_off, results_on = [], []
    sent_bytes, saved_bytes, scores, has_objects = [], [], [], []
    prefilter_ms, head_ms, shared_ms = [], [], []
    for index in progress_bar(range(count), desc="bench prefilter", unit="img"):
        image, target = dataset[index]
        began = time.perf_counter()
        score = model.prefilter_score(image)
        prefilter_ms.append((time.perf_counter() - began) * 1e3)
        began = time.perf_counter()
        features, meta = model.head(image, split)
        head_ms.append((time.perf_counter() - began) * 1e3)
        # What the edge runs: prefilter and head in one pass (threshold 0 so the head always completes).
        began = time.perf_counter()
        model.run_head(image, split, prefilter=0.0)
        shared_ms.append((time.perf_counter() - began) * 1e3)
        payload = codec.encode(features)
        out = model.tail(codec.decode(payload), meta, split)
        detections = to_coco_results(dataset.image_id(index), out["boxes"], out["scores"], out["labels"])
        results_off += detections
        scores.append(score)
        has_objects.append(len(target["labels"]) > 0)
        if score >= threshold:
            results_on += detections
            sent_bytes.append(len(payload))
        else:
            saved_bytes.append(len(payload))
    scores_t, objects_t = torch.tensor(scores), torch.tensor(has_objects)
    kept = scores_t >= threshold
    gt = dataset.coco()
    off, on = coco_map(gt, results_off), coco_map(gt, results_on)
    return {
        "benchmark": "prefilter",
        "images": count,
        "split": split,
        "codec": codec_name,
        "threshold": threshold,
        "empty_fraction": float((~objects_t).float().mean()),
        "recall_frames_with_objects": float(kept[objects_t].float().mean()),
        "empty_frames_filtered": float((~kept[~objects_t]).float().mean()),
        "frames_not_sent": float((~kept).float().mean()),
        "bytes_not_sent": sum(saved_bytes) / max(1, sum(saved_bytes) + sum(sent_bytes)),
        "map_off": off["map"],
        "map_on": on["map"],
        "map50_off": off["map50"],
        "map50_on": on["map50"],
        "map_change": on["map"] - off["map"],
        "prefilter_standalone_ms": statistics.median(prefilter_ms),
        "head_ms": statistics.median(head_ms),
        "head_with_prefilter_ms": statistics.median(shared_ms),
        "prefilter_extra_ms": statistics.median(shared_ms) - statistics.median(head_ms),
        "shares_computation": model.shares_prefilter_input(split),
    }


def format_table(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"bench prefilter: {r['images']} test images ({100 * r['empty_fraction']:.0f}% empty), "
            f"split {r['split']} / {r['codec']}, threshold {r['threshold']:.4f}",
            f"  recall of frames with objects: {100 * r['recall_frames_with_objects']:6.1f} %",
            f"  empty frames filtered:         {100 * r['empty_frames_filtered']:6.1f} %",
            f"  frames not sent:               {100 * r['frames_not_sent']:6.1f} %",
            f"  bytes not sent:                {100 * r['bytes_not_sent']:6.1f} %",
            f"  mAP@[.5:.95] off / on:         {r['map_off']:6.1f} / {r['map_on']:.1f}  "
            f"(change {r['map_change']:+.2f})",
            f"  mAP@.5 off / on:               {r['map50_off']:6.1f} / {r['map50_on']:.1f}",
            f"  head alone / head + prefilter: {r['head_ms']:6.2f} / {r['head_with_prefilter_ms']:.2f} ms "
            f"(prefilter adds {r['prefilter_extra_ms']:+.2f} ms; "
            f"{'shares' if r['shares_computation'] else 'does not share'} the head's layers)",
            f"  prefilter on its own:          {r['prefilter_standalone_ms']:6.2f} ms per frame",
        ]
    )


def main(count: int, split: str, codec: str, threshold: float | None, out: Path) -> int:
    result = run(count, split, codec, threshold)
    print(format_table(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    return 0
