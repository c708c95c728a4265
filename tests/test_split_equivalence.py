"""For every model and every split point, head -> fp32 bytes -> tail equals the unsplit model."""

from __future__ import annotations

import pytest
import torch

from splitrt.codecs import get_codec
from splitrt.models import INPUT_SPLIT, SplitError, build_model, list_models

# Small inputs and zero score thresholds so untrained detectors still return boxes.
DETECTOR_OPTIONS = {
    "fasterrcnn_resnet50_fpn": {"min_size": 128, "max_size": 160, "num_classes": 5, "box_score_thresh": 0.0},
    "fasterrcnn_mobilenet_v3_large_fpn": {"min_size": 128, "max_size": 160, "num_classes": 5, "box_score_thresh": 0.0},
    "fasterrcnn_mobilenet_v3_large_320_fpn": {
        "min_size": 128,
        "max_size": 160,
        "num_classes": 5,
        "box_score_thresh": 0.0,
    },
    "retinanet_resnet50_fpn": {"min_size": 128, "max_size": 160, "num_classes": 5, "score_thresh": 0.0},
    "fcos_resnet50_fpn": {"min_size": 128, "max_size": 160, "num_classes": 5, "score_thresh": 0.0},
    "ssdlite320_mobilenet_v3_large": {"num_classes": 5, "score_thresh": 0.0},
    "shapes_fcos": {"score_thresh": 0.0},  # the shipped weights; its learned bottlenecks are lossy by design
}
CLASSIFIER_OPTIONS = {"resnet18": {}, "resnet50": {}, "mobilenet_v3_large": {}}
CLASSIFIER_OPTIONS = {name: {"num_classes": 10, "image_size": 96} for name in CLASSIFIER_OPTIONS}


def test_zoo_has_the_promised_families():
    names = set(list_models())
    assert set(DETECTOR_OPTIONS) | set(CLASSIFIER_OPTIONS) <= names
    assert set(DETECTOR_OPTIONS) | set(CLASSIFIER_OPTIONS) == names, "a new model needs an equivalence test"


@pytest.mark.parametrize("name", sorted(DETECTOR_OPTIONS))
def test_detector_split_equals_full(name):
    model = build_model(name, **DETECTOR_OPTIONS[name])
    codec = get_codec("fp32")
    image = torch.rand(3, 150, 190, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = model.full(image)
        assert len(reference["boxes"]) > 0, "the reference must detect something for the comparison to mean anything"
        assert len(model.split_points) >= 5
        lossless = [s for s in model.split_points if s not in getattr(model, "branch_splits", [])]
        for split in lossless:
            features, meta = model.head(image, split)
            if split != INPUT_SPLIT:
                features = codec.decode(codec.encode(features))
            model.check_features(features, split)
            model.check_meta(features, meta, split)
            out = model.tail(features, meta, split)
            assert torch.equal(out["labels"], reference["labels"]), f"{name} @ {split}: labels differ"
            torch.testing.assert_close(out["boxes"], reference["boxes"], atol=1e-4, rtol=0, msg=f"{name} @ {split}")
            torch.testing.assert_close(out["scores"], reference["scores"], atol=1e-5, rtol=0)
            # boxes come back in the caller's pixel coordinates
            assert float(out["boxes"][:, 2].max()) <= 190 + 1e-3 and float(out["boxes"][:, 3].max()) <= 150 + 1e-3


@pytest.mark.parametrize("name", sorted(CLASSIFIER_OPTIONS))
def test_classifier_split_equals_full(name):
    model = build_model(name, **CLASSIFIER_OPTIONS[name])
    codec = get_codec("fp32")
    image = torch.rand(3, 80, 100, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference = model.full(image)["logits"]
        for split in model.split_points:
            features, meta = model.head(image, split)
            if split != INPUT_SPLIT:
                features = codec.decode(codec.encode(features))
            model.check_features(features, split)
            model.check_meta(features, meta, split)
            torch.testing.assert_close(model.tail(features, meta, split)["logits"], reference, atol=1e-5, rtol=0)


def test_untrained_weights_are_identical_across_builds():
    a = build_model("resnet18", num_classes=10)
    b = build_model("resnet18", num_classes=10)
    c = build_model("resnet18", num_classes=11)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


def test_features_that_do_not_fit_the_split_are_refused():
    model = build_model("resnet18", num_classes=10, image_size=64)
    features, _ = model.head(torch.rand(3, 64, 64), "layer1")
    with pytest.raises(SplitError, match="no split point"):
        model.check_features(features, "layer9")
    with pytest.raises(SplitError, match="must have shape"):
        model.check_features(features, "layer2")  # layer1's 64 channels where layer2's 128 are expected
    renamed = type(features)(y=features["x"])
    with pytest.raises(SplitError, match="expects tensors"):
        model.check_features(renamed, "layer1")
    from splitrt.models import FrameMeta

    with pytest.raises(SplitError, match="frame gives"):
        model.check_meta(features, FrameMeta((64, 64), (32, 32), (32, 32)), "layer1")  # maps too big for the frame
    features["x"][0, 0, 0, 0] = float("nan")
    with pytest.raises(SplitError, match="NaN"):
        model.check_features(features, "layer1")


def test_weights_round_trip_through_safetensors(tmp_path):
    from splitrt.models import save_weights

    model = build_model("resnet18", num_classes=10)
    with torch.no_grad():
        model.classifier.fc.bias.add_(1.0)
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    loaded = build_model("resnet18", weights=path, num_classes=10)
    assert loaded.fingerprint() == model.fingerprint()
    assert loaded.fingerprint() != build_model("resnet18", num_classes=10).fingerprint()
    with pytest.raises(FileNotFoundError):
        build_model("resnet18", weights=tmp_path / "missing.safetensors", num_classes=10)
