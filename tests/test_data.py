"""The synthetic shapes set is deterministic and its annotations are valid COCO; mAP behaves."""

from __future__ import annotations

import numpy as np

from splitrt.data import shapes
from splitrt.data.datasets import ShapesDetection
from splitrt.data.evaluate import coco_map


def test_samples_are_deterministic_and_splits_differ():
    a_image, a_anns = shapes.sample(0, "train", 5)
    b_image, b_anns = shapes.sample(0, "train", 5)
    assert np.array_equal(a_image, b_image) and a_anns == b_anns
    assert not np.array_equal(a_image, shapes.sample(0, "val", 5)[0])
    assert not np.array_equal(a_image, shapes.sample(1, "train", 5)[0])


def test_annotations_are_valid_and_a_quarter_of_images_are_empty():
    counts, empty = [], 0
    for index in range(200):
        image, anns = shapes.sample(0, "train", index, size=96)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        for ann in anns:
            x1, y1, x2, y2 = ann["box"]
            assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
            assert 1 <= ann["label"] <= len(shapes.CLASSES)
        counts.append(len(anns))
        empty += not anns
    assert 0.15 <= empty / 200 <= 0.35
    assert max(counts) >= 3
    labels = {a["label"] for i in range(200) for a in shapes.sample(0, "train", i, size=96)[1]}
    assert labels == set(range(1, len(shapes.CLASSES) + 1))


def test_coco_export_and_map_of_perfect_and_poor_predictions():
    data = ShapesDetection("val", 12, size=96)
    gt = data.coco()
    assert len(gt["images"]) == 12 and len(gt["categories"]) == len(shapes.CLASSES)
    perfect = [{**{k: a[k] for k in ("image_id", "category_id", "bbox")}, "score": 1.0} for a in gt["annotations"]]
    assert coco_map(gt, perfect)["map"] == 100.0
    shifted = [{**p, "bbox": [p["bbox"][0] + p["bbox"][2] / 2, *p["bbox"][1:]]} for p in perfect]
    assert coco_map(gt, shifted)["map"] < 50.0
    wrong_class = [{**p, "category_id": p["category_id"] % len(shapes.CLASSES) + 1} for p in perfect]
    assert coco_map(gt, wrong_class)["map"] == 0.0


def test_dataset_items_are_tensors_and_targets():
    image, target = ShapesDetection("train", 4, size=64)[0]
    assert image.shape == (3, 64, 64) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target["boxes"].shape[1] == 4 and target["labels"].dtype.is_floating_point is False


def test_video_mode_moves_objects():
    frames = list(shapes.video(3, size=96))
    assert len(frames) == 3
    boxes = [[a["box"] for a in anns] for _, anns in frames]
    assert boxes[0] and boxes[0] != boxes[2]


def test_the_dense_world_exports_as_a_coco_folder_the_user_path_reads(tmp_path):
    """The harder world: larger images, 16 classes, tiny to large objects; written the way a user's set is."""
    from splitrt.cli import main
    from splitrt.data.datasets import CocoDetection, open_dataset
    from splitrt.data.shapes import DENSE, SHAPES

    assert main(["data", "export", "--world", "dense", "--split", "val", "--count", "6", "--out", str(tmp_path)]) == 0
    data = open_dataset(str(tmp_path / "annotations.json"), "train")
    assert isinstance(data, CocoDetection) and len(data) == 6
    image, target = data[0]
    assert tuple(image.shape) == (3, DENSE.size, DENSE.size)
    assert len(DENSE.classes) == 2 * len(SHAPES.classes)
    widths = []
    labels = set()
    for i in range(len(data)):
        _, target = data[i]
        widths += (target["boxes"][:, 2] - target["boxes"][:, 0]).tolist()
        labels |= set(target["labels"].tolist())
    assert labels <= set(range(1, len(DENSE.classes) + 1)) and len(labels) > 3
    assert min(widths) < 0.08 * DENSE.size and max(widths) > 0.25 * DENSE.size  # small and large objects
