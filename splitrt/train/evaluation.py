"""mAP of a split model (full, or through a codec at a split point) on a data set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..data.evaluate import coco_map, to_coco_results
from ..outputs import progress_bar


@torch.inference_mode()
def detection_map(
    predict: Callable[[int], dict[str, torch.Tensor]], dataset: Any, desc: str = "eval", progress: bool = True
) -> dict[str, float]:
    """``predict(index)`` returns torchvision-style outputs for item ``index`` of ``dataset``."""
    results = []
    for index in progress_bar(range(len(dataset)), desc=desc, unit="img", leave=False, enabled=progress):
        out = predict(index)
        results += to_coco_results(dataset.image_id(index), out["boxes"], out["scores"], out["labels"])
    return coco_map(dataset.coco(), results)
