"""The model zoo: split-able torchvision models registered by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models import mobilenet_v3_large, resnet18, resnet50

from .base import SplitModel
from .bottleneck import BottleneckDetector, BranchConfig
from .classification import ClassificationSplitModel
from .detection import DetectionSplitModel, predict_fcos, predict_rcnn, predict_retinanet, predict_ssd
from .stages import Stage

ModelBuilder = Callable[..., SplitModel]
_REGISTRY: dict[str, ModelBuilder] = {}

#: Seed for weights=None, so that an edge and a server building the same
#: untrained model in different processes get identical weights.
UNTRAINED_SEED = 0


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def add(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


#: Weights that ship inside the package, trained by this project (see README: reproducing them).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SHIPPED_WEIGHTS = {"shapes_fcos": "shapes_fcos.safetensors"}
#: Ask for deterministic untrained weights even where trained ones ship.
RANDOM = "random"


def shipped_weights(name: str) -> Path | None:
    path = WEIGHTS_DIR / SHIPPED_WEIGHTS[name] if name in SHIPPED_WEIGHTS else None
    return path if path is not None and path.is_file() else None


def build_model(name: str, weights: str | Path | None = None, **kwargs: Any) -> SplitModel:
    """Build a registered model in eval mode.

    ``weights`` is ``None`` (the weights that ship with splitrt for this
    model, else deterministic untrained weights), ``"random"`` (always
    untrained), a safetensors file written by splitrt, or ``"DEFAULT"`` for
    torchvision's pretrained weights (downloads; never used by tests).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    tv_weights = "DEFAULT" if weights == "DEFAULT" else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        model = _REGISTRY[name](tv_weights=tv_weights, **kwargs)
    if weights is None:
        weights = shipped_weights(name)
    if weights not in (None, "DEFAULT", RANDOM):
        load_weights(model, Path(weights))
    model.trained = weights not in (None, RANDOM)
    if model.class_names is None:
        model.class_names = default_class_names(name, model)
    return model.eval()


def default_class_names(name: str, model: SplitModel) -> tuple[str, ...] | None:
    """The label names a zoo model predicts: the shapes world's, COCO's or ImageNet's (by class count)."""
    from torchvision.models._meta import _COCO_CATEGORIES, _IMAGENET_CATEGORIES

    if name == "shapes_fcos":
        from ..data.shapes import CLASSES

        return ("__background__", *CLASSES)
    detector = getattr(model, "detector", None)
    if detector is not None:
        from .bottleneck import detector_classes

        try:
            count = detector_classes(detector)
        except ValueError:
            return None
        return tuple(_COCO_CATEGORIES) if count == len(_COCO_CATEGORIES) else None
    classifier = getattr(model, "classifier", None)
    if classifier is not None:
        last = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        if last and last[-1].out_features == len(_IMAGENET_CATEGORIES):
            return tuple(_IMAGENET_CATEGORIES)
    return None


def load_weights(model: nn.Module, path: Path, except_prefix: str | None = None) -> None:
    """Load a safetensors file (never a pickle) into ``model``, strictly, and check its entropy tables.

    ``except_prefix`` leaves one submodule (e.g. ``"prefilter."``, about to be retrained) as it is.
    """
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    state = load_file(str(path))
    _fit_entropy_tables(model, state)
    if except_prefix:
        state = {k: v for k, v in state.items() if not k.startswith(except_prefix)}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(except_prefix)})
    model.load_state_dict(state, strict=True)
    _check_entropy_tables(model, path)
    model._fingerprint = None


def _fit_entropy_tables(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """CDF tables vary in size with training; give the buffers the saved shapes before loading."""
    from .entropy import entropy_models

    for name, module in entropy_models(model):
        module.fit_saved_tables(state, f"{name}.")


def _check_entropy_tables(model: nn.Module, path: Path) -> None:
    """The saved CDF tables must be exactly what these weights produce, or bitstreams would not decode."""
    from .entropy import entropy_models

    for name, module in entropy_models(model):
        if not module.tables_match_parameters():
            raise ValueError(
                f"{path}: the CDF tables of {name} do not match its parameters "
                "(corrupt file, or written by an incompatible CompressAI version)"
            )


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=metadata)


# -- backbone flattening ----------------------------------------------------------------
def _body_stages(body: nn.Module) -> list[Stage]:
    """Stages of torchvision's IntermediateLayerGetter, keeping its return names."""
    return [Stage(module, body.return_layers.get(name)) for name, module in body.named_children()]


def _resnet_cuts(names: list[str]) -> dict[str, int]:
    cuts = {"stem": names.index("maxpool") + 1}
    cuts.update({n: names.index(n) + 1 for n in names if n.startswith("layer")})
    return cuts


def _mobilenet_cuts(blocks: list[nn.Module], offset: int = 0) -> dict[str, int]:
    """Cut after the last block at each resolution, i.e. before each downsampling block."""
    ends = [i - 1 for i, b in enumerate(blocks) if getattr(b, "_is_cn", False) and i > 1]
    return {f"features.{i}": offset + i + 1 for i in ends}


def _fpn_detector(name: str, detector: nn.Module, predict: Any, mobilenet: bool) -> DetectionSplitModel:
    body = detector.backbone.body
    stages = _body_stages(body)
    names = [n for n, _ in body.named_children()]
    if mobilenet:
        cuts = _mobilenet_cuts([m for _, m in body.named_children()])
        cuts["body"] = len(stages)
    else:
        cuts = _resnet_cuts(names)
    return DetectionSplitModel(name, detector, stages, cuts, predict, neck=detector.backbone.fpn)


def _detector_kwargs(kwargs: dict[str, Any], tv_weights: Any) -> dict[str, Any]:
    out = dict(kwargs)
    out.setdefault("weights", tv_weights)
    out.setdefault("weights_backbone", None)
    if tv_weights is None:
        out.setdefault("num_classes", 91)
    return out


@register_model("fasterrcnn_resnet50_fpn")
def fasterrcnn_resnet50_fpn(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    det = tvd.fasterrcnn_resnet50_fpn(**_detector_kwargs(kwargs, tv_weights))
    return _fpn_detector("fasterrcnn_resnet50_fpn", det, predict_rcnn, mobilenet=False)


@register_model("fasterrcnn_mobilenet_v3_large_fpn")
def fasterrcnn_mobilenet_v3_large_fpn(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    det = tvd.fasterrcnn_mobilenet_v3_large_fpn(**_detector_kwargs(kwargs, tv_weights))
    return _fpn_detector("fasterrcnn_mobilenet_v3_large_fpn", det, predict_rcnn, mobilenet=True)


@register_model("fasterrcnn_mobilenet_v3_large_320_fpn")
def fasterrcnn_mobilenet_v3_large_320_fpn(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    """The low-resolution (320 px) variant, fast enough for a CPU-only edge."""
    det = tvd.fasterrcnn_mobilenet_v3_large_320_fpn(**_detector_kwargs(kwargs, tv_weights))
    return _fpn_detector("fasterrcnn_mobilenet_v3_large_320_fpn", det, predict_rcnn, mobilenet=True)


@register_model("retinanet_resnet50_fpn")
def retinanet_resnet50_fpn(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    det = tvd.retinanet_resnet50_fpn(**_detector_kwargs(kwargs, tv_weights))
    return _fpn_detector("retinanet_resnet50_fpn", det, predict_retinanet, mobilenet=False)


@register_model("fcos_resnet50_fpn")
def fcos_resnet50_fpn(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    det = tvd.fcos_resnet50_fpn(**_detector_kwargs(kwargs, tv_weights))
    return _fpn_detector("fcos_resnet50_fpn", det, predict_fcos, mobilenet=False)


@register_model("ssdlite320_mobilenet_v3_large")
def ssdlite320_mobilenet_v3_large(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    det = tvd.ssdlite320_mobilenet_v3_large(**_detector_kwargs(kwargs, tv_weights))
    extractor = det.backbone
    to_c4, to_c5 = list(extractor.features[0]), list(extractor.features[1])
    stages = [Stage(m) for m in to_c4[:-1]] + [Stage(to_c4[-1], "0")]
    stages += [Stage(m) for m in to_c5[:-1]] + [Stage(to_c5[-1], "1")]
    stages += [Stage(m, str(2 + i)) for i, m in enumerate(extractor.extra)]
    cuts = _mobilenet_cuts(to_c4)
    cuts.update({"c4": len(to_c4), "c5": len(to_c4) + len(to_c5), "backbone": len(stages)})
    return DetectionSplitModel("ssdlite320_mobilenet_v3_large", det, stages, cuts, predict_ssd)


def _classifier_kwargs(kwargs: dict[str, Any], tv_weights: Any) -> tuple[dict[str, Any], int]:
    out = dict(kwargs)
    size = out.pop("image_size", 224)
    out.setdefault("weights", tv_weights)
    return out, size


@register_model("resnet18")
def resnet18_classifier(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    return _resnet_classifier("resnet18", resnet18, tv_weights, kwargs)


@register_model("resnet50")
def resnet50_classifier(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    return _resnet_classifier("resnet50", resnet50, tv_weights, kwargs)


def _resnet_classifier(name: str, factory: Any, tv_weights: Any, kwargs: dict[str, Any]) -> SplitModel:
    tv_kwargs, size = _classifier_kwargs(kwargs, tv_weights)
    net = factory(**tv_kwargs)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]
    stages = [Stage(getattr(net, n)) for n in names] + [Stage(nn.Flatten(1)), Stage(net.fc)]
    cuts = _resnet_cuts(names)
    cuts["pool"] = len(names) + 1
    return ClassificationSplitModel(name, net, stages, cuts, size)


@register_model("mobilenet_v3_large")
def mobilenet_v3_large_classifier(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    tv_kwargs, size = _classifier_kwargs(kwargs, tv_weights)
    net = mobilenet_v3_large(**tv_kwargs)
    blocks = list(net.features)
    stages = [Stage(b) for b in blocks] + [Stage(net.avgpool), Stage(nn.Flatten(1)), Stage(net.classifier)]
    cuts = _mobilenet_cuts(blocks)
    cuts["features"] = len(blocks)
    cuts["pool"] = len(blocks) + 2
    return ClassificationSplitModel("mobilenet_v3_large", net, stages, cuts, size)


# -- models trained by this project ------------------------------------------------------------------
@register_model("shapes_fcos")
def shapes_fcos(tv_weights: Any = None, **kwargs: Any) -> SplitModel:
    """FCOS on a MobileNetV3-Large FPN (96 channels) for the synthetic shapes set, 160 px.

    Small enough to train from scratch on two CPU cores and to ship inside
    the package; ``tv_weights`` is ignored (there are no pretrained weights).
    """
    from functools import partial

    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    num_classes = kwargs.pop("num_classes", 9)
    channels = kwargs.pop("fpn_channels", 96)
    size = kwargs.pop("image_size", 160)
    features = mobilenet_v3_large(norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)).features
    returned = {"6": "0", "12": "1", "16": "2"}
    in_channels = [features[int(i)].out_channels for i in returned]
    backbone = BackboneWithFPN(
        features, returned, in_channels, channels, extra_blocks=LastLevelP6P7(channels, channels)
    )
    head = FCOSHead(channels, num_anchors=1, num_classes=num_classes, num_convs=2)
    kwargs.setdefault("score_thresh", 0.05)
    kwargs.setdefault("detections_per_img", 50)
    det = tvd.FCOS(backbone, num_classes, min_size=size, max_size=size, head=head, **kwargs)
    body = det.backbone.body
    cuts = _mobilenet_cuts([m for _, m in body.named_children()])
    cuts["body"] = len(body)
    return BottleneckDetector(
        "shapes_fcos",
        det,
        _body_stages(body),
        cuts,
        predict_fcos,
        neck=det.backbone.fpn,
        branches=SHAPES_BRANCHES,
        prefilter_cut="features.6",
        exit_cut="features.6",
    )


#: The learned bottlenecks of shapes_fcos: ``/bn`` plain (sent as int8+zstd), ``/ebK`` entropy-coded
#: (K = rate-distortion trade-off, 1 = fewest bytes), ``/slim`` entropy-coded with a per-frame width.
SHAPES_BRANCHES = {
    "features.3/bn": BranchConfig("features.3", 16, entropy=False),
    "features.6/bn": BranchConfig("features.6", 24, entropy=False),
    "features.3/eb2": BranchConfig("features.3", 16, entropy=True),
    "features.6/eb1": BranchConfig("features.6", 24, entropy=True),
    "features.6/eb2": BranchConfig("features.6", 24, entropy=True),
    "features.6/eb3": BranchConfig("features.6", 24, entropy=True),
    # Slimmable: one set of weights, 8 / 16 / 24 / 32 latent channels chosen per frame.
    "features.6/slim": BranchConfig("features.6", 32, entropy=True, widths=(0.25, 0.5, 0.75, 1.0)),
}
