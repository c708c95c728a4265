"""Model cards: a zoo detector plus its learned parts, declared in a TOML file beside the weights.

A card says which zoo architecture is the base (and its builder options), where its weights
are, and which bottleneck branches, prefilter and early exit it carries.  Branches are data,
not code: the same `BottleneckDetector` logic builds them on any zoo detector.  The server
and the edge build a model from the same card; the per-frame fingerprint (a hash of every
weight, branches included) refuses a frame from a head built from another card or weights.

    name = "my_detector"
    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    weights = "my_detector.safetensors"        # relative to the card; absent: untrained
    classes = ["person", "car", "bike"]        # optional, index 1.. (0 is background)
    [options]                                  # passed to the zoo builder
    num_classes = 4
    [[branches]]
    split = "features.6/eb1"                   # <cut>/<variant>: the cut must be a split point
    latent_channels = 24
    entropy = true
    lambda = 2.0                               # training only: loss = bpp + lambda * relative MSE
    widths = [0.25, 0.5, 1.0]                  # optional: slimmable
    [prefilter]
    cut = "features.6"
    [exit]
    cut = "features.6"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .base import SplitModel
from .bottleneck import BottleneckDetector, BranchConfig
from .detection import DetectionSplitModel
from .zoo import RANDOM, UNTRAINED_SEED, build_model, list_models, load_weights

_CARD_KEYS = {"name", "arch", "weights", "classes", "options", "branches", "prefilter", "exit", "description"}
_BRANCH_KEYS = {"split", "latent_channels", "entropy", "lambda", "widths", "hidden"}


class CardError(ValueError):
    """A model card that cannot describe a model; the message names the field and the file."""


@dataclass(frozen=True)
class BranchSpec:
    """One branch as declared: where it cuts, its latent, and the training trade-off."""

    split: str
    config: BranchConfig
    lam: float | None = None


@dataclass(frozen=True)
class ModelCard:
    name: str
    arch: str
    weights: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    branches: tuple[BranchSpec, ...] = ()
    prefilter_cut: str | None = None
    exit_cut: str | None = None
    classes: tuple[str, ...] | None = None
    description: str = ""
    path: Path | None = None

    def build(self, weights: str | Path | None = None) -> SplitModel:
        """The model this card describes; ``weights`` overrides the card's (``"random"``: untrained)."""
        base = build_model(self.arch, weights=RANDOM, **self.options)
        if not isinstance(base, DetectionSplitModel):
            raise CardError(f"{self._where()}: branches need a detector; {self.arch!r} is a {base.task} model")
        if self.branches or self.prefilter_cut or self.exit_cut:
            self._check_cuts(base)
            with torch.random.fork_rng(devices=[]):  # untrained parts are deterministic, as in the zoo
                torch.manual_seed(UNTRAINED_SEED + 1)
                model: SplitModel = BottleneckDetector.extend(
                    base,
                    {b.split: b.config for b in self.branches},
                    prefilter_cut=self.prefilter_cut,
                    exit_cut=self.exit_cut,
                )
        else:
            model = base
        model.name = self.name
        chosen = self.weights if weights is None else weights
        if chosen not in (None, RANDOM):
            load_weights(model, Path(chosen))
        model.trained = chosen not in (None, RANDOM)
        model.card = self
        if self.classes is not None:
            model.class_names = ("__background__", *self.classes)
        return model.eval()

    def lambda_for(self, split: str) -> float | None:
        return next((b.lam for b in self.branches if b.split == split), None)

    def with_weights(self, weights: Path) -> ModelCard:
        return replace(self, weights=weights)

    def to_toml(self, relative_to: Path | None = None) -> str:
        """The card as TOML; the weights path is written relative to ``relative_to`` (the card's folder)."""
        lines = [f"name = {_q(self.name)}", f"arch = {_q(self.arch)}"]
        if self.weights is not None:
            weights = self.weights
            if relative_to is not None:
                try:
                    weights = weights.resolve().relative_to(relative_to.resolve())
                except ValueError:
                    pass
            lines.append(f"weights = {_q(str(weights))}")
        if self.description:
            lines.append(f"description = {_q(self.description)}")
        if self.classes is not None:
            lines.append("classes = [" + ", ".join(_q(c) for c in self.classes) + "]")
        if self.options:
            lines += ["", "[options]", *(f"{k} = {_value(v)}" for k, v in self.options.items())]
        for b in self.branches:
            lines += ["", "[[branches]]", f"split = {_q(b.split)}", f"latent_channels = {b.config.latent_channels}"]
            lines.append(f"entropy = {'true' if b.config.entropy else 'false'}")
            if b.config.hidden != BranchConfig.hidden:
                lines.append(f"hidden = {b.config.hidden}")
            if b.lam is not None:
                lines.append(f"lambda = {b.lam}")
            if b.config.widths is not None:
                lines.append("widths = [" + ", ".join(str(w) for w in b.config.widths) + "]")
        if self.prefilter_cut:
            lines += ["", "[prefilter]", f"cut = {_q(self.prefilter_cut)}"]
        if self.exit_cut:
            lines += ["", "[exit]", f"cut = {_q(self.exit_cut)}"]
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> None:
        path.write_text(self.to_toml(relative_to=path.parent))

    def _check_cuts(self, base: DetectionSplitModel) -> None:
        for what, cut in [*((f"branch {b.split!r}", b.config.cut) for b in self.branches),
                          ("prefilter", self.prefilter_cut), ("exit", self.exit_cut)]:  # fmt: skip
            if cut is None:
                continue
            if cut not in base.split_points or cut == "input":
                raise CardError(
                    f"{self._where()}: {what} cuts at {cut!r}, which is not a split point of {self.arch!r} "
                    f"(its split points: {', '.join(s for s in base.split_points if s != 'input')})"
                )
            if len(base.feature_specs(cut)) != 1:
                raise CardError(f"{self._where()}: {what} needs a cut where one tensor crosses; {cut!r} sends several")

    def _where(self) -> str:
        return f"model card {self.path}" if self.path else f"model card {self.name!r}"


def load_card(path: str | Path) -> ModelCard:
    """Read and check a card; every mistake is a `CardError` naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model card {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"model card {path} is not valid TOML: {exc}") from None
    return card_from_dict(data, path)


def card_from_dict(data: dict[str, Any], path: Path | None = None) -> ModelCard:
    where = f"model card {path}" if path else "model card"
    unknown = set(data) - _CARD_KEYS
    if unknown:
        raise CardError(f"{where}: unknown field(s) {sorted(unknown)}; fields: {sorted(_CARD_KEYS)}")
    for key in ("name", "arch"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise CardError(f"{where}: {key!r} must be a non-empty string")
    if data["arch"] not in list_models():
        raise CardError(f"{where}: arch {data['arch']!r} is not in the zoo ({', '.join(list_models())})")
    weights = data.get("weights")
    if weights is not None:
        weights = Path(weights)
        if not weights.is_absolute() and path is not None:
            weights = path.parent / weights
    branches = tuple(_branch(b, where) for b in data.get("branches", []))
    splits = [b.split for b in branches]
    if len(set(splits)) != len(splits):
        raise CardError(f"{where}: a branch split is declared twice: {splits}")
    classes = data.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CardError(f"{where}: 'classes' must be a list of names")
    return ModelCard(
        name=data["name"],
        arch=data["arch"],
        weights=weights,
        options=dict(data.get("options", {})),
        branches=branches,
        prefilter_cut=_cut(data.get("prefilter"), "prefilter", where),
        exit_cut=_cut(data.get("exit"), "exit", where),
        classes=tuple(classes) if classes is not None else None,
        description=str(data.get("description", "")),
        path=path,
    )


def _branch(entry: dict[str, Any], where: str) -> BranchSpec:
    unknown = set(entry) - _BRANCH_KEYS
    if unknown:
        raise CardError(f"{where}: branch field(s) {sorted(unknown)} unknown; fields: {sorted(_BRANCH_KEYS)}")
    split = entry.get("split")
    if not isinstance(split, str) or "/" not in split:
        raise CardError(f"{where}: a branch's split must be '<cut>/<variant>', e.g. 'features.6/eb1', not {split!r}")
    channels = entry.get("latent_channels")
    if not isinstance(channels, int) or channels < 1:
        raise CardError(f"{where}: branch {split!r}: latent_channels must be a positive integer")
    widths = entry.get("widths")
    if widths is not None:
        if not widths or any(not 0 < float(w) <= 1 for w in widths) or list(widths) != sorted(widths):
            raise CardError(f"{where}: branch {split!r}: widths must be increasing fractions in (0, 1]")
        widths = tuple(float(w) for w in widths)
    entropy = entry.get("entropy", True)
    if widths is not None and not entropy:
        raise CardError(f"{where}: branch {split!r}: a slimmable branch is entropy-coded")
    config = BranchConfig(
        split.rpartition("/")[0], channels, bool(entropy), hidden=int(entry.get("hidden", 64)), widths=widths
    )
    lam = entry.get("lambda")
    return BranchSpec(split, config, float(lam) if lam is not None else None)


def _cut(section: dict[str, Any] | None, what: str, where: str) -> str | None:
    if section is None:
        return None
    if set(section) != {"cut"} or not isinstance(section["cut"], str):
        raise CardError(f"{where}: [{what}] takes one field, cut = '<split point>'")
    return section["cut"]


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _q(value)
    return repr(value)
