"""Frame results and conversion of user images to the tensor the head expects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


def to_image_tensor(image: Any) -> Tensor:
    """A numpy HxWx3 uint8 array, a PIL image or a tensor -> CHW float in [0, 1]."""
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] != 3 and t.shape[-1] == 3:
            t = t.permute(2, 0, 1)
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"image tensor must be CHW or HWC with 3 channels, got shape {tuple(image.shape)}")
        return t.float().div(255.0) if t.dtype == torch.uint8 else t.float()
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"numpy images must be HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255.0)
    raise TypeError(f"unsupported image type {type(image).__name__}; pass a numpy array, PIL image or tensor")


@dataclass
class FrameResult:
    """What happened to one frame: a server result, a local result, or an error."""

    frame_id: int
    #: "split", "offload", "local", "fallback" (local after a server failure), "prefiltered" (not sent),
    #: "skipped" / "timeout" (adaptive edge: nothing could make the deadline / the answer missed it) or "error"
    mode: str
    split: str
    codec: str
    wire_bytes: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    logits: np.ndarray | None = None
    error: str | None = None
    note: str | None = None
    width: float | None = None
    prefilter_score: float | None = None
    #: extra JSON fields, e.g. the adaptive controller's decision and the estimates behind it
    extra: dict[str, Any] = field(default_factory=dict)
    #: The model's label names, indexed by label (from the model card or the zoo), when known.
    class_names: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def raise_for_error(self) -> FrameResult:
        """Raise `FrameFailed` if the frame failed (refused, unanswered, dropped); else return it.

        Per-frame failures are results, never exceptions, from ``detect`` and ``stream`` alike
        (a stream must go on past a bad frame); this turns one into an exception where a caller
        wants that, as ``requests``' ``raise_for_status`` does.
        """
        if self.error is not None:
            raise FrameFailed(self.error, self)
        return self

    @property
    def names(self) -> list[str]:
        """The label name of each detection (``"label 7"`` where the model has no names for it)."""
        if self.labels is None:
            return []
        return [self.label_name(int(label)) for label in self.labels]

    def label_name(self, label: int) -> str:
        names = self.class_names
        return names[label] if names is not None and 0 <= label < len(names) else f"label {label}"

    def draw(self, image: Any, min_score: float = 0.0, width: int = 2) -> Any:
        """The image (numpy HxWx3, PIL or tensor) as a PIL image with the boxes, names and scores drawn."""
        from PIL import Image, ImageDraw

        tensor = to_image_tensor(image)
        picture = Image.fromarray((tensor.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
        if self.boxes is None:
            return picture
        pen = ImageDraw.Draw(picture)
        for box, score, label in zip(self.boxes, self.scores, self.labels):
            if score < min_score:
                continue
            colour = _PALETTE[int(label) % len(_PALETTE)]
            x0, y0, x1, y1 = (float(v) for v in box)
            pen.rectangle((x0, y0, x1, y1), outline=colour, width=width)
            caption = f"{self.label_name(int(label))} {score:.2f}"
            left, top, right, bottom = pen.textbbox((x0, y0), caption)
            lift = bottom - top + 2
            pen.rectangle((x0, y0 - lift, x0 + right - left + 4, y0), fill=colour)
            pen.text((x0 + 2, y0 - lift), caption, fill=(0, 0, 0))
        return picture

    @property
    def num_detections(self) -> int:
        return 0 if self.boxes is None else int(len(self.boxes))

    def confident(self, min_score: float = 0.5) -> int:
        """Detections at or above ``min_score`` (the JSON lines keep every detection, for mAP)."""
        return 0 if self.scores is None else int((self.scores >= min_score).sum())

    def detections(self) -> list[dict[str, Any]]:
        if self.boxes is None:
            return []
        named = self.class_names is not None
        return [
            {"box": [round(float(v), 2) for v in box], "score": round(float(s), 4), "label": int(lab)}
            | ({"name": self.label_name(int(lab))} if named else {})
            for box, s, lab in zip(self.boxes, self.scores, self.labels)
        ]

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "frame": self.frame_id,
            "mode": self.mode,
            "split": self.split,
            "codec": self.codec,
            "bytes": self.wire_bytes,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "detections": self.detections(),
            "error": self.error,
        }
        if self.note:
            record["note"] = self.note
        if self.width is not None:
            record["width"] = self.width
        if self.prefilter_score is not None:
            record["prefilter_score"] = round(self.prefilter_score, 4)
        record.update(self.extra)
        if self.logits is not None:
            top = np.argsort(-self.logits.reshape(-1))[:5]
            record["top5"] = [int(i) for i in top]
        return record


class FrameFailed(RuntimeError):
    """A frame the server refused or never answered; the message says why, ``result`` is the frame's."""

    def __init__(self, message: str, result: FrameResult | None = None) -> None:
        super().__init__(message)
        self.result = result


#: Box colours by label: distinct, light enough for black captions.
_PALETTE = [(255, 99, 71), (60, 179, 113), (65, 105, 225), (255, 215, 0), (238, 130, 238), (0, 206, 209),
            (244, 164, 96), (154, 205, 50), (255, 105, 180), (135, 206, 250)]  # fmt: skip


def result_from_outputs(base: FrameResult, outputs: dict[str, Any], score_threshold: float = 0.0) -> FrameResult:
    """Fill a result's outputs from named arrays or tensors; detections under ``score_threshold`` are left out."""

    def arr(name: str) -> np.ndarray | None:
        value = outputs.get(name)
        if value is None:
            return None
        return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)

    boxes, scores, labels = arr("boxes"), arr("scores"), arr("labels")
    # A batching server (Triton) answers with a leading batch dimension of one; drop it.
    base.boxes = None if boxes is None else boxes.reshape(-1, 4)
    base.scores = None if scores is None else scores.reshape(-1)
    base.labels = None if labels is None else labels.reshape(-1)
    if score_threshold > 0 and base.scores is not None and base.boxes is not None and base.labels is not None:
        keep = base.scores >= score_threshold
        base.boxes, base.scores, base.labels = base.boxes[keep], base.scores[keep], base.labels[keep]
    base.logits = arr("logits")
    return base
