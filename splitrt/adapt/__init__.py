"""Adaptive split computing: per-device profiles, link/device estimators, the controller and the simulator."""

from .controller import AdaptiveController, Decision, StaticController
from .estimators import Estimates, LinkEstimator
from .profile import ConfigProfile, Configuration, Profile

__all__ = [
    "AdaptiveController",
    "ConfigProfile",
    "Configuration",
    "Decision",
    "Estimates",
    "LinkEstimator",
    "Profile",
    "StaticController",
]
