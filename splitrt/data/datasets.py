"""Detection data sets as (image, target) pairs: the synthetic shapes set and COCO-format folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from . import shapes


def to_target(annotations: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    boxes = torch.tensor([a["box"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([a["label"] for a in annotations], dtype=torch.int64)
    return {"boxes": boxes, "labels": labels}


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255.0)


class ShapesDetection(Dataset):
    """The synthetic set, generated on the fly: item i is image i of the split."""

    def __init__(self, split: str, count: int | None = None, seed: int = 0, size: int = shapes.DEFAULT_SIZE) -> None:
        if split not in shapes.SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(shapes.SPLITS)}")
        self.split, self.seed, self.size = split, seed, size
        self.count = count if count is not None else shapes.DEFAULT_COUNTS[split]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, annotations = shapes.sample(self.seed, self.split, index, self.size)
        return to_tensor(image), to_target(annotations)

    def image(self, index: int) -> np.ndarray:
        return shapes.sample(self.seed, self.split, index, self.size)[0]

    def coco(self) -> dict[str, Any]:
        return shapes.to_coco(self.seed, self.split, self.count, self.size)

    def image_id(self, index: int) -> int:
        return index + 1


class CocoDetection(Dataset):
    """A COCO-format data set on disk: an annotation JSON and an image folder.

    Category ids are used as labels unchanged, as torchvision's COCO models do.
    """

    def __init__(self, images: str | Path, annotations: str | Path, count: int | None = None) -> None:
        self.root = Path(images)
        path = Path(annotations)
        if not path.is_file():
            raise FileNotFoundError(f"COCO annotation file {path} does not exist")
        self.data = json.loads(path.read_text())
        self.images = self.data["images"][:count] if count else self.data["images"]
        self.by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in self.data.get("annotations", []):
            if not ann.get("iscrowd", 0):
                self.by_image.setdefault(ann["image_id"], []).append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        path = self.root / self.images[index]["file_name"]
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        anns = self.by_image.get(self.images[index]["id"], [])
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        return to_tensor(self.image(index)), to_target(
            [{"box": b, "label": a["category_id"]} for b, a in zip(boxes, anns)]
        )

    def coco(self) -> dict[str, Any]:
        ids = {img["id"] for img in self.images}
        return {
            **self.data,
            "images": self.images,
            "annotations": [a for a in self.data["annotations"] if a["image_id"] in ids],
        }

    def image_id(self, index: int) -> int:
        return self.images[index]["id"]


def collate(batch):
    images, targets = zip(*batch)
    return list(images), list(targets)


#: The synthetic world's name for ``--data``.
SHAPES = "shapes"


def open_dataset(
    data: str, split: str, count: int | None = None, seed: int = 0, images: str | Path | None = None
) -> Dataset:
    """``--data``: ``shapes`` (the synthetic world; ``split`` picks train/val/test) or a COCO-format
    annotation JSON, its images in ``images`` (default: an ``images/`` folder beside it, else its folder)."""
    if data == SHAPES:
        return ShapesDetection(split, count, seed=seed)
    path = Path(data)
    if path.suffix != ".json":
        raise ValueError(f"--data {data!r}: give 'shapes' or a COCO-format annotations .json file")
    if not path.is_file():
        raise FileNotFoundError(f"--data: COCO annotation file {path} does not exist")
    folder = Path(images) if images is not None else (path.parent / "images")
    if images is None and not folder.is_dir():
        folder = path.parent
    return CocoDetection(folder, path, count)
