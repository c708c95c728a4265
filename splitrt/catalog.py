"""What the zoo and the codec registry hold, as data: listing them needs neither torch nor a model.

The registries (`splitrt.models.zoo`, `splitrt.codecs`) are the truth; this catalogue mirrors
them for fast listings and for validating names before anything heavy is built, and a test
checks that the two agree (names, tasks, split points, kinds).
"""

from __future__ import annotations

from typing import NamedTuple


class ModelEntry(NamedTuple):
    task: str
    splits: tuple[str, ...]
    summary: str


class CodecEntry(NamedTuple):
    kind: str  # "features", "image" or "local"
    summary: str


MODELS: dict[str, ModelEntry] = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": ModelEntry(
        "detection",
        ("input", "features.1", "features.3", "features.6", "features.12", "body", "fpn"),
        "torchvision Faster R-CNN, MobileNetV3-Large FPN backbone, 320 px (COCO classes)",
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": ModelEntry(
        "detection",
        ("input", "features.1", "features.3", "features.6", "features.12", "body", "fpn"),
        "torchvision Faster R-CNN, MobileNetV3-Large FPN backbone (COCO classes)",
    ),
    "fasterrcnn_resnet50_fpn": ModelEntry(
        "detection",
        ("input", "stem", "layer1", "layer2", "layer3", "layer4", "fpn"),
        "torchvision Faster R-CNN, ResNet-50 FPN (COCO classes)",
    ),
    "fcos_resnet50_fpn": ModelEntry(
        "detection",
        ("input", "stem", "layer1", "layer2", "layer3", "layer4", "fpn"),
        "torchvision FCOS, ResNet-50 FPN (COCO classes)",
    ),
    "mobilenet_v3_large": ModelEntry(
        "classification",
        ("input", "features.1", "features.3", "features.6", "features.12", "features", "pool"),
        "torchvision MobileNetV3-Large classifier (ImageNet classes)",
    ),
    "resnet18": ModelEntry(
        "classification",
        ("input", "stem", "layer1", "layer2", "layer3", "layer4", "pool"),
        "torchvision ResNet-18 classifier (ImageNet classes)",
    ),
    "resnet50": ModelEntry(
        "classification",
        ("input", "stem", "layer1", "layer2", "layer3", "layer4", "pool"),
        "torchvision ResNet-50 classifier (ImageNet classes)",
    ),
    "retinanet_resnet50_fpn": ModelEntry(
        "detection",
        ("input", "stem", "layer1", "layer2", "layer3", "layer4", "fpn"),
        "torchvision RetinaNet, ResNet-50 FPN (COCO classes)",
    ),
    "shapes_fcos": ModelEntry(
        "detection",
        (
            "input",
            "features.1",
            "features.3",
            "features.6",
            "features.12",
            "body",
            "fpn",
            "features.3/bn",
            "features.6/bn",
            "features.3/eb2",
            "features.6/eb1",
            "features.6/eb2",
            "features.6/eb3",
            "features.6/slim",
        ),
        "FCOS on MobileNetV3 at 160 px, trained here on the shapes world; bottlenecks, prefilter, early exit",
    ),
    "ssdlite320_mobilenet_v3_large": ModelEntry(
        "detection",
        ("input", "features.1", "features.3", "features.6", "c4", "c5", "backbone"),
        "torchvision SSDlite 320, MobileNetV3-Large (COCO classes)",
    ),
}

CODECS: dict[str, CodecEntry] = {
    "fp32": CodecEntry("features", "float32 tensors, as they are"),
    "fp32-zstd": CodecEntry("features", "float32 tensors, zstd-compressed"),
    "fp16": CodecEntry("features", "float16 tensors"),
    "fp16-zstd": CodecEntry("features", "float16 tensors, zstd-compressed"),
    "int8": CodecEntry("features", "8-bit quantised tensors (per-channel scale)"),
    "int8-zstd": CodecEntry("features", "8-bit quantised tensors, zstd-compressed"),
    "entropy": CodecEntry(
        "features", "a learned bottleneck's latent, entropy-coded (rANS); needs a model with that branch"
    ),
    "bottleneck-int8-zstd": CodecEntry(
        "features", "a learned bottleneck's latent, int8 + zstd; needs a model with that branch"
    ),
    "jpeg": CodecEntry("image", "the input frame as JPEG (quality 90; jpeg:Q for another quality)"),
    "webp": CodecEntry("image", "the input frame as WebP (webp:Q for another quality)"),
    "png": CodecEntry("image", "the input frame as PNG (lossless)"),
    "raw": CodecEntry("image", "the input frame as raw uint8 pixels"),
    "image": CodecEntry("image", "the input frame, lossless (PNG)"),
    "local": CodecEntry("local", "nothing is sent: the whole model runs on the device"),
}
#: Codecs named PREFIX:ARG (an image codec at another quality).
PARAMETRIC_CODECS = ("jpeg", "webp")


def check_names(model: str, split: str | None, codec: str | None) -> None:
    """Refuse unknown model, split or codec names at once, before a model is built (seconds) for nothing.

    Raises KeyError for a model, ValueError for a split or codec; names outside the catalogue
    (a model registered by the user at run time) are left for the registry to judge.
    """
    entry = MODELS.get(model)
    if entry is not None and split is not None and split not in entry.splits:
        raise ValueError(f"model {model!r} has no split {split!r}; its splits: {', '.join(entry.splits)}")
    if codec is None:
        return
    prefix, sep, _ = codec.partition(":")
    if codec not in CODECS and not (sep and prefix in PARAMETRIC_CODECS):
        raise ValueError(f"unknown codec {codec!r}; codecs: {', '.join(CODECS)}")
