"""Resumable training state: weights as safetensors, optimiser state loaded with weights_only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.zoo import load_weights, save_weights


def load_detector(model: nn.Module, path: Path) -> None:
    """Load only the detector (teacher) weights of a file, ignoring any bottleneck branches in it."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    prefix = "detector."
    state = {k[len(prefix) :]: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{path} holds no detector weights")
    model.detector.load_state_dict(state, strict=True)
    model._fingerprint = None


def model_to_extend(weights: Path, retrained: str, card: Path | None = None) -> nn.Module:
    """shapes_fcos (or a card's model) from ``weights``, except the submodule ``retrained``
    (e.g. ``"prefilter."``), trained next.

    The file need not hold that submodule yet: it keeps its fresh (untrained) weights.
    """
    from ..models import build_model

    if card is not None:
        from ..models.card import load_card

        model = load_card(card).build("random")
    else:
        model = build_model("shapes_fcos", weights="random")
    load_weights(model, weights, except_prefix=retrained)
    model.trained = True
    return model


def save(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, step: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp_weights, tmp_state = directory / "last.safetensors.tmp", directory / "last-state.pt.tmp"
    save_weights(model, tmp_weights)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step}, tmp_state)
    os.replace(tmp_weights, directory / "last.safetensors")  # atomic: a kill mid-save keeps the previous checkpoint
    os.replace(tmp_state, directory / "last-state.pt")


def resume(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, load: Any = load_weights
) -> int:
    """Load the last checkpoint if there is one; returns the step to continue from."""
    weights, state_path = directory / "last.safetensors", directory / "last-state.pt"
    if not (weights.is_file() and state_path.is_file()):
        return 0
    load(model, weights)
    state = torch.load(state_path, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


class JsonLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = path.open("a")

    def write(self, **record: Any) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
