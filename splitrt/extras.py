"""Optional dependencies, and the message that names the extra to install when one is missing.

The device install is lean (``pip install splitrt`` or ``splitrt[edge]``): no plotting, no COCO
evaluation, no video decoding.  Those come with ``[plots]``, ``[train]`` and ``[video]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{purpose} needs {module.split('.')[0]}: pip install 'splitrt[{extra}]'") from exc


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the file-only Agg backend (plots are written as PNGs)."""
    matplotlib = require("matplotlib", "plots", "drawing plots")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def optional_plot(draw, *args):
    """Run a plotting function; without matplotlib say so and go on (the table and JSON are written)."""
    try:
        result = draw(*args)
    except MissingExtra as exc:
        print(f"no plot: {exc}")
        return False
    return True if result is None else result
