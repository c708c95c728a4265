"""Learned bottlenecks injected at a split point (head = student layers + encoder, tail = decoder + rest).

Follows CompressAI's contract: ``forward`` is the training path (with
likelihoods when entropy-coded), ``compress``/``decompress`` produce and read
the real bitstream, and ``update()`` builds the CDF tables after training.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import FeatureSpec, FrameMeta, SplitError
from .detection import DetectionSplitModel
from .stages import Stage

LATENT = "y"


@dataclass(frozen=True)
class BranchConfig:
    """A bottleneck variant: where it cuts the teacher, how wide its latent is, whether it is entropy-coded."""

    cut: str
    latent_channels: int
    entropy: bool
    hidden: int = 64


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class BottleneckBranch(nn.Module):
    """Student copy of the teacher's first stages, an encoder to a narrow latent, and its decoder.

    The encoder halves the resolution and narrows the channels; the decoder
    restores the teacher's tensor at the cut, which the teacher's remaining
    layers then consume unchanged.
    """

    def __init__(self, student: nn.Module, in_channels: int, config: BranchConfig) -> None:
        super().__init__()
        self.config = config
        h, c = config.hidden, config.latent_channels
        self.student = student
        self.encoder = nn.Sequential(
            _conv(in_channels, h, 3, 2),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            _conv(h, h),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            _conv(h, c, 1),
        )
        self.decoder = nn.Sequential(
            _conv(c, h, 1),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(h, h, 4, stride=2, padding=1),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            _conv(h, in_channels),
        )
        self.entropy_bottleneck = None
        if config.entropy:
            with warnings.catch_warnings():  # compressai's import warns about torch.jit.script deprecation
                warnings.simplefilter("ignore", FutureWarning)
                from compressai.entropy_models import EntropyBottleneck

            self.entropy_bottleneck = EntropyBottleneck(c)

    # -- training path ---------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Normalised image batch -> (reconstructed teacher features, likelihoods or None)."""
        y = self.encoder(self.student(x))
        if self.entropy_bottleneck is None:
            return self.decode(y), None
        y_hat, likelihoods = self.entropy_bottleneck(y)
        return self.decode(y_hat), likelihoods

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(self.student(x))

    def decode(self, y: Tensor) -> Tensor:
        return self.decoder(y)

    # -- wire path (entropy-coded branches) ------------------------------------------------------------
    def compress(self, y: Tensor) -> bytes:
        self._require_entropy()
        return self.entropy_bottleneck.compress(y)[0]

    def decompress(self, string: bytes, size: tuple[int, int]) -> Tensor:
        self._require_entropy()
        return self.entropy_bottleneck.decompress([string], size)

    def update(self, force: bool = True) -> None:
        if self.entropy_bottleneck is not None:
            self.entropy_bottleneck.update(force=force)

    def aux_loss(self) -> Tensor:
        return self.entropy_bottleneck.loss() if self.entropy_bottleneck is not None else torch.zeros(())

    def _require_entropy(self) -> None:
        if self.entropy_bottleneck is None:
            raise SplitError("this bottleneck is not entropy-coded; use a feature codec such as bottleneck-int8-zstd")


def branch_key(split: str) -> str:
    """nn.ModuleDict keys cannot hold dots."""
    return split.replace(".", "_").replace("/", "__")


class BottleneckDetector(DetectionSplitModel):
    """A detector with learned bottleneck branches as extra split points (``<cut>/<variant>``)."""

    def __init__(self, *args, branches: dict[str, BranchConfig], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.branch_splits = list(branches)
        self.branches = nn.ModuleDict()
        for split, config in branches.items():
            stop = self._cuts[config.cut]
            specs = self._specs[config.cut]
            if len(specs) != 1:
                raise ValueError(f"a bottleneck needs a cut where one tensor crosses; {config.cut} sends {len(specs)}")
            student = copy.deepcopy(nn.Sequential(*[s.module for s in self._stages[:stop]]))
            self.branches[branch_key(split)] = BottleneckBranch(student, specs[0].channels, config)
        for split, config in branches.items():
            cut_stride = self._specs[config.cut][0].stride
            self._specs[split] = [FeatureSpec(LATENT, config.latent_channels, cut_stride * 2 if cut_stride else None)]

    @property
    def split_points(self) -> list[str]:
        return super().split_points + self.branch_splits

    def branch(self, split: str) -> BottleneckBranch:
        if split not in self.branch_splits:
            raise SplitError(f"split {split!r} of {self.name!r} has no bottleneck; bottlenecks: {self.branch_splits}")
        return self.branches[branch_key(split)]

    def teacher_stages(self) -> list[Stage]:
        return self._stages

    def head(self, image: Tensor, split: str) -> tuple[OrderedDict[str, Tensor], FrameMeta]:
        if split not in self.branch_splits:
            return super().head(image, split)
        images, _ = self.detector.transform([image])
        meta = FrameMeta(
            (int(image.shape[-2]), int(image.shape[-1])),
            tuple(images.image_sizes[0]),
            (int(images.tensors.shape[-2]), int(images.tensors.shape[-1])),
        )
        return OrderedDict([(LATENT, self.branch(split).encode(images.tensors))]), meta

    def tail(self, features: OrderedDict[str, Tensor], meta: FrameMeta, split: str) -> dict[str, Tensor]:
        if split not in self.branch_splits:
            return super().tail(features, meta, split)
        branch = self.branch(split)
        cut = branch.config.cut
        restored = branch.decode(features[LATENT])
        return super().tail(OrderedDict([(self._specs[cut][0].name, restored)]), meta, cut)

    def update(self) -> None:
        """Build every entropy model's CDF tables (after training, before compress)."""
        for branch in self.branches.values():
            branch.update(force=True)
