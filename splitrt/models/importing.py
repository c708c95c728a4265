"""Bringing torchvision checkpoints in: a `.pth` state dict becomes splitrt's safetensors weights.

A user who downloaded torchvision's COCO weights on a machine with internet copies the
`.pth` here and converts it once; nothing is ever downloaded at run time, and nothing is
unpickled beyond tensors (``weights_only=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import SplitModel
from .zoo import RANDOM, build_model, save_weights

#: Keys under which training scripts commonly nest the model's state dict.
_NESTED = ("model", "state_dict", "model_state_dict")
_SHOWN = 5


class CheckpointError(ValueError):
    """A checkpoint that does not fit the architecture; the message lists what differs."""


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a `.pth` file (nested under 'model'/'state_dict' or not; DataParallel prefixes stripped)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with objects other than tensors, or not a torch file at all
        raise CheckpointError(f"{path} is not a tensors-only torch checkpoint ({type(exc).__name__}: {exc})") from None
    for key in _NESTED:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def torchvision_module(model: SplitModel) -> nn.Module:
    """The torchvision network inside a split model, whose keys a torchvision checkpoint uses."""
    for attribute in ("detector", "classifier"):
        if isinstance(getattr(model, attribute, None), nn.Module):
            return getattr(model, attribute)
    raise CheckpointError(f"{type(model).__name__} wraps no torchvision network")


def check_fits(state: dict[str, torch.Tensor], target: nn.Module, what: str) -> None:
    """Refuse a checkpoint whose keys or shapes differ from ``target``'s, naming the first few differences."""
    expected = target.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
        if items:
            more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            parts.append(f"{len(items)} {label}: {'; '.join(items[:_SHOWN])}{more}")
    hint = ""
    if any("cls_score" in w or "cls_logits" in w or w.startswith("fc.") for w in wrong):
        hint = " (a different number of classes? pass --model-option num_classes=N)"
    raise CheckpointError(f"the checkpoint does not fit {what}: " + " | ".join(parts) + hint)


def import_weights(
    checkpoint: Path,
    out: Path,
    arch: str | None = None,
    options: dict[str, Any] | None = None,
    card: Path | None = None,
) -> SplitModel:
    """Load a torchvision checkpoint into a zoo architecture (or a card's base) and write safetensors.

    With a card the learned parts (branches, prefilter, exit) stay untrained: train them next.
    """
    if card is not None:
        from .card import load_card

        model = load_card(card).build(RANDOM)
        what = f"the base {model.card.arch!r} of card {card}"
    elif arch is not None:
        model = build_model(arch, weights=RANDOM, **(options or {}))
        what = f"{arch!r}" + (f" with options {options}" if options else "")
    else:
        raise ValueError("name the architecture (--arch) or a model card (--model-card)")
    state = read_checkpoint(checkpoint)
    target = torchvision_module(model)
    check_fits(state, target, what)
    target.load_state_dict(state, strict=True)
    model._fingerprint = None
    if hasattr(model, "update"):
        model.update()  # CDF tables of any entropy-coded branch, so the file loads back
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, out, metadata={"source": checkpoint.name})
    return model
