"""Export a split model's head to TorchScript, for devices that run libtorch rather than full PyTorch.

What is exported is the head after the detector's preprocessing (resize,
normalise, pad; ``model.preprocess``), which a device can do with any image
library: one input, the normalised batch, and one output per tensor that
crosses the network, in wire order.  A slimmable head is exported at one
width (export one file per width the device should offer).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..models.base import INPUT_SPLIT, SplitError
from ..models.detection import DetectionSplitModel


class ExportableHead(nn.Module):
    def __init__(self, model: DetectionSplitModel, split: str) -> None:
        super().__init__()
        if split == INPUT_SPLIT:
            raise SplitError("split 'input' has no head to export: the device sends the image")
        model.check_split(split)
        self.model = model
        self.split = split

    def forward(self, batch: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.head_from_batch(batch, self.split).values())


def export_head(
    model: DetectionSplitModel, split: str, example: Tensor, out: str | Path, width: float | None = None
) -> Path:
    """Trace the head on ``example`` (a CHW image in [0, 1]) and save it as TorchScript."""
    if not isinstance(model, DetectionSplitModel):
        raise SplitError(f"head export supports detection models; {model.name!r} is {type(model).__name__}")
    if width is not None:
        model.branch(split).set_width(width)
    head = ExportableHead(model, split).eval()
    batch, _ = model.preprocess(example)
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(head, batch, check_trace=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(out))
    return out
