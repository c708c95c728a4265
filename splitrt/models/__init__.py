"""Split-able models: a registry of torchvision detectors and classifiers."""

from .base import INPUT_SPLIT, FeatureSpec, FrameMeta, SplitError, SplitModel
from .zoo import build_model, list_models, load_weights, register_model, save_weights

__all__ = [
    "INPUT_SPLIT",
    "FeatureSpec",
    "FrameMeta",
    "SplitError",
    "SplitModel",
    "build_model",
    "list_models",
    "load_weights",
    "register_model",
    "save_weights",
]
