"""Adaptive split computing: per-device profiles, link/device estimators, the controller and the simulator.

The names below are imported on first use, so that `splitrt.adapt.commands` (the CLI's flags)
loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AdaptiveController": "controller",
    "Decision": "controller",
    "StaticController": "controller",
    "Estimates": "estimators",
    "LinkEstimator": "estimators",
    "ConfigProfile": "profile",
    "Configuration": "profile",
    "Profile": "profile",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
