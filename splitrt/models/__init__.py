"""Split-able models: a registry of torchvision detectors and classifiers.

The names below load on first use, so that `splitrt.models.commands` (CLI flags) needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "INPUT_SPLIT": "base",
    "FeatureSpec": "base",
    "FrameMeta": "base",
    "SplitError": "base",
    "SplitModel": "base",
    "build_model": "zoo",
    "list_models": "zoo",
    "load_weights": "zoo",
    "register_model": "zoo",
    "save_weights": "zoo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
