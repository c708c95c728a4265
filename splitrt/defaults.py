"""Names every command shares: the demo's model and configuration, and where shipped files live.

Kept free of heavy imports, so that `splitrt --help` and the listings stay fast.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL = "shapes_fcos"
DEMO_SPLIT = "features.6/eb2"
DEMO_CODEC = "entropy"
#: Profiles measured on this project's 2-core x86 machine, one per shipped model.
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
SHIPPED_PROFILE = "the shipped shapes_fcos profile"
