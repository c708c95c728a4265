"""How a deployment names a model: served name, architecture, weights, options.

The edge and the server must build the same model; both read the same spec
(flags or a TOML file) and the fingerprint check catches any disagreement.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import SplitModel
from .zoo import build_model, list_models


@dataclass
class ModelSpec:
    name: str
    arch: str
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: Expected SHA-256 of the weights file; a different file is refused before it is read.
    sha256: str | None = None
    #: A model card (TOML): the zoo architecture plus its branches, prefilter and exit, and weights.
    card: str | None = None

    def build(self) -> SplitModel:
        if self.card is not None:
            from .card import load_card

            card = load_card(self.card)
            weights = self.weights if self.weights is not None else card.weights
            if self.sha256 is not None:
                check_file_digest(None if weights is None else str(weights), self.sha256)
            model = card.build(weights if weights is not None else "random")
        else:
            if self.sha256 is not None:
                check_file_digest(self.weights, self.sha256)
            model = build_model(self.arch, weights=self.weights, **self.options)
        model.name = self.name
        return model


def check_file_digest(path: str | None, expected: str) -> None:
    if path is None or path in ("DEFAULT", "random"):
        raise ValueError("a sha256 pin needs a weights file")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != expected.lower():
        raise ValueError(f"weights file {path} has SHA-256 {digest}, the config pins {expected}: refusing to load it")


def parse_model_flag(text: str, weights: str | None = None, options: dict[str, Any] | None = None) -> ModelSpec:
    """``ARCH``, ``NAME=ARCH``, or a model card ``CARD.toml`` / ``NAME=CARD.toml``, as given on the command line."""
    name, sep, arch = text.partition("=")
    if not sep:
        arch = name
    if arch.endswith(".toml"):
        return card_spec(arch, name if sep else None, weights)
    if arch not in list_models():
        raise ValueError(f"unknown model architecture {arch!r}; choose one of {', '.join(list_models())}")
    return ModelSpec(name=name, arch=arch, weights=weights, options=dict(options or {}))


def card_spec(card: str | Path, name: str | None = None, weights: str | None = None) -> ModelSpec:
    """A spec served from a model card; its name is the card's unless given."""
    from .card import load_card

    loaded = load_card(card)
    return ModelSpec(name or loaded.name, loaded.arch, weights, card=str(Path(card).resolve()))


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are JSON where they parse (numbers, booleans), else strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"model option {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def load_config(path: str | Path) -> list[ModelSpec]:
    """Models from a TOML file: ``[[models]]`` tables with name, arch, weights, options and an optional sha256."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model config {path} does not exist")
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    entries = data.get("models")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected one or more [[models]] tables")
    specs = []
    for i, entry in enumerate(entries):
        if "card" in entry:
            card = path.parent / entry["card"]
            weights = entry.get("weights")
            weights = str((path.parent / weights).resolve()) if weights is not None else None
            spec = card_spec(card, entry.get("name"), weights)
            spec.sha256 = entry.get("sha256")
            specs.append(spec)
            continue
        if "name" not in entry:
            raise ValueError(f"{path}: models[{i}] has no name")
        arch = entry.get("arch", entry["name"])
        if arch not in list_models():
            raise ValueError(f"{path}: models[{i}] has unknown arch {arch!r}")
        weights = entry.get("weights")
        if weights is not None and weights != "DEFAULT":
            weights = str((path.parent / weights).resolve())
        specs.append(ModelSpec(entry["name"], arch, weights, dict(entry.get("options", {})), entry.get("sha256")))
    return specs
