"""COCO mAP with pycocotools, the reference implementation."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np


def coco_map(ground_truth: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, float]:
    """mAP@[.5:.95] and mAP@.5 (in percent) of ``detections`` against COCO-format ``ground_truth``.

    ``detections`` are COCO result dicts: image_id, category_id, bbox [x, y, w, h], score.
    """
    from ..extras import require

    COCO = require("pycocotools.coco", "train", "scoring mAP").COCO
    COCOeval = require("pycocotools.cocoeval", "train", "scoring mAP").COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        if not detections:
            return {"map": 0.0, "map50": 0.0, "map75": 0.0}
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.imgIds = [img["id"] for img in ground_truth["images"]]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"map": 100 * float(stats[0]), "map50": 100 * float(stats[1]), "map75": 100 * float(stats[2])}


def to_coco_results(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """Detections of one image (xyxy boxes) as COCO result dicts."""
    results = []
    for (x1, y1, x2, y2), score, label in zip(np.asarray(boxes), np.asarray(scores), np.asarray(labels)):
        results.append(
            {
                "image_id": image_id,
                "category_id": int(label),
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "score": float(score),
            }
        )
    return results
