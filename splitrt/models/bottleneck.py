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

with warnings.catch_warnings():  # compressai's import warns about torch.jit.script deprecation
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.models import CompressionModel

from .base import INPUT_SPLIT, FeatureSpec, FrameMeta, HeadResult, SplitError
from .detection import DetectionSplitModel, shape_only_images
from .entropy import SliceableEntropyBottleneck
from .stages import Stage

LATENT = "y"


@dataclass(frozen=True)
class BranchConfig:
    """A bottleneck variant: where it cuts the teacher, how wide its latent is, whether it is entropy-coded."""

    cut: str
    latent_channels: int
    entropy: bool
    hidden: int = 64
    #: Fractions of the latent a slimmable branch can send (None: a fixed-width branch).
    widths: tuple[float, ...] | None = None


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class BottleneckBranch(CompressionModel):
    """Student copy of the teacher's first stages, an encoder to a narrow latent, and its decoder.

    The encoder halves the resolution and narrows the channels; the decoder
    restores the teacher's tensor at the cut, which the teacher's remaining
    layers then consume unchanged.  CompressAI's contract: ``forward`` for training
    (``x_hat`` and ``likelihoods``), ``compress``/``decompress`` for strings and shape,
    ``update()`` after training, ``aux_loss()``; the codecs use the latent-level
    ``compress_latent``/``decompress_latent`` (the head computes the latent itself).
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
        self.widths = config.widths or (1.0,)
        self.width = self.widths[-1]
        if config.widths:
            # Switchable batch norm: statistics differ with the number of channels sent, weights are shared.
            self.width_norms = nn.ModuleList(nn.BatchNorm2d(h) for _ in config.widths)
        self.entropy_bottleneck = SliceableEntropyBottleneck(c) if config.entropy else None

    # -- widths (slimmable branches) -------------------------------------------------------------------
    @property
    def slimmable(self) -> bool:
        return self.config.widths is not None

    def channels(self, width: float | None = None) -> int:
        width = self.width if width is None else width
        if width not in self.widths:
            raise SplitError(f"width {width} is not one of this bottleneck's widths {list(self.widths)}")
        return max(1, round(width * self.config.latent_channels))

    def channel_options(self) -> list[int]:
        return [self.channels(w) for w in self.widths]

    def set_width(self, width: float) -> None:
        """Switch the number of latent channels computed and sent: a value, not a reload."""
        self.channels(width)  # validates
        self.width = width

    def width_of(self, channels: int) -> float:
        for width in self.widths:
            if self.channels(width) == channels:
                return width
        raise SplitError(f"a latent of {channels} channels matches none of the widths {list(self.widths)}")

    # -- training path ---------------------------------------------------------------------------
    def forward(self, x: Tensor, width: float | None = None) -> dict:
        """Normalised image batch -> ``x_hat`` (the teacher's features restored) and ``likelihoods``
        of the sent channels (empty for a plain branch), as CompressAI models return."""
        return self.code(self.student(x), width)

    def code(self, head_features: Tensor, width: float | None = None) -> dict:
        """The bottleneck alone, from the student's output (training with a frozen student starts here)."""
        y = self.latent(head_features, width)
        if self.entropy_bottleneck is None:
            return {"x_hat": self.decode(y), "likelihoods": {}}
        y_hat, likelihoods = self.entropy_bottleneck.forward_channels(y)
        return {"x_hat": self.decode(y_hat), "likelihoods": {"y": likelihoods}}

    def encode(self, x: Tensor, width: float | None = None) -> Tensor:
        return self.latent(self.student(x), width)

    def latent(self, head_features: Tensor, width: float | None) -> Tensor:
        hidden = self.encoder[:-1](head_features)
        last = self.encoder[-1]
        k = self.channels(width)
        # A narrow width computes only the channels it sends.
        return nn.functional.conv2d(hidden, last.weight[:k], last.bias[:k])

    def decode(self, y: Tensor) -> Tensor:
        if not self.slimmable:
            return self.decoder(y)
        first = self.decoder[0]
        k = y.shape[1]
        norm = self.width_norms[self.widths.index(self.width_of(k))]
        x = torch.relu(norm(nn.functional.conv2d(y, first.weight[:, :k], first.bias)))
        return self.decoder[3:](x)

    # -- wire path (entropy-coded branches) ------------------------------------------------------------
    def compress(self, x: Tensor, width: float | None = None) -> dict:
        """CompressAI's ``compress``: an image batch -> one string per image and the latent's shape."""
        y = self.encode(x, width)
        return {"strings": [[self.compress_latent(y[i : i + 1]) for i in range(y.shape[0])]], "shape": y.shape[-2:]}

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int], channels: int | None = None) -> dict:
        """CompressAI's ``decompress``: strings and shape -> ``x_hat``, the teacher's features restored."""
        y = torch.cat([self.decompress_latent(s, tuple(shape), channels) for s in strings[0]])
        return {"x_hat": self.decode(y)}

    def compress_latent(self, y: Tensor) -> bytes:
        """The rANS string of a latent of one frame (its first ``y.shape[1]`` channels)."""
        self._require_entropy()
        return self.entropy_bottleneck.compress_channels(y)

    def decompress_latent(self, string: bytes, size: tuple[int, int], channels: int | None = None) -> Tensor:
        """The latent back from its string; any bytes at all are safe (see ``safe_rans``).

        Raises ``safe_rans.RansBoundsError`` for a string that no latent of this shape could have produced.
        """
        self._require_entropy()
        return self.entropy_bottleneck.decompress_channels(string, channels or self.config.latent_channels, size)

    def update(self, scale_table=None, force: bool = True, update_quantiles: bool = False) -> bool:
        """Build the CDF tables after training (forced by default: the tables must match the weights)."""
        return super().update(scale_table, force=force, update_quantiles=update_quantiles)

    def aux_loss(self) -> Tensor:
        return super().aux_loss() if self.entropy_bottleneck is not None else torch.zeros(())

    def _require_entropy(self) -> None:
        if self.entropy_bottleneck is None:
            raise SplitError("this bottleneck is not entropy-coded; use a feature codec such as bottleneck-int8-zstd")


def detector_classes(detector: nn.Module) -> int:
    """The class count a torchvision detector predicts (FCOS/RetinaNet/SSD heads, Faster R-CNN's ROI heads)."""
    head = getattr(detector, "head", None)
    classification = getattr(head, "classification_head", None)
    for attribute in ("num_classes", "num_columns"):  # FCOS and RetinaNet; SSD
        if hasattr(classification, attribute):
            return int(getattr(classification, attribute))
    roi_heads = getattr(detector, "roi_heads", None)
    if roi_heads is not None:
        return int(roi_heads.box_predictor.cls_score.out_features)
    raise ValueError(f"cannot tell how many classes {type(detector).__name__} predicts")


def branch_key(split: str) -> str:
    """nn.ModuleDict keys cannot hold dots."""
    return split.replace(".", "_").replace("/", "__")


class BottleneckDetector(DetectionSplitModel):
    """A detector with learned bottleneck branches as extra split points (``<cut>/<variant>``)."""

    def __init__(
        self,
        *args,
        branches: dict[str, BranchConfig],
        prefilter_cut: str | None = None,
        exit_cut: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.prefilter_cut = prefilter_cut
        self.prefilter = None
        if prefilter_cut is not None:
            from ..prefilter import Prefilter

            spec = self._specs[prefilter_cut][0]
            # Pool features finer than stride 8 once more before the classifier's own layers.
            self.prefilter = Prefilter(spec.channels, first_stride=2 if (spec.stride or 8) < 8 else 1)
        self.branch_splits = list(branches)
        self.branches = nn.ModuleDict()
        for split, config in branches.items():
            specs = self._specs[config.cut]
            if len(specs) != 1:
                raise ValueError(f"a bottleneck needs a cut where one tensor crosses; {config.cut} sends {len(specs)}")
            student = copy.deepcopy(self.teacher_prefix(config.cut))
            self.branches[branch_key(split)] = BottleneckBranch(student, specs[0].channels, config)
        for split, config in branches.items():
            cut_stride = self._specs[config.cut][0].stride
            self._specs[split] = [FeatureSpec(LATENT, config.latent_channels, cut_stride * 2 if cut_stride else None)]
        # Built last, so the untrained weights of everything before it do not depend on it.
        self.early_exit = None
        if exit_cut is not None:
            from .early_exit import EarlyExit

            spec = self._specs[exit_cut][0]
            size = int(self.detector.transform.min_size[0])
            classes = detector_classes(self.detector)
            self.early_exit = EarlyExit(exit_cut, spec.channels, spec.stride or 8, classes, size)

    @classmethod
    def extend(
        cls,
        base: DetectionSplitModel,
        branches: dict[str, BranchConfig],
        prefilter_cut: str | None = None,
        exit_cut: str | None = None,
    ) -> BottleneckDetector:
        """Any zoo detector with learned parts added (what a model card declares); shares its modules."""
        return cls(
            base.name,
            base.detector,
            base._stages,
            base._cuts,
            base._predict,
            neck=base._neck,
            neck_split=base._neck_split or "fpn",
            branches=branches,
            prefilter_cut=prefilter_cut,
            exit_cut=exit_cut,
        )

    @property
    def split_points(self) -> list[str]:
        return super().split_points + self.branch_splits

    def branch(self, split: str) -> BottleneckBranch:
        if split not in self.branch_splits:
            raise SplitError(f"split {split!r} of {self.name!r} has no bottleneck; bottlenecks: {self.branch_splits}")
        return self.branches[branch_key(split)]

    def teacher_stages(self) -> list[Stage]:
        return self._stages

    def teacher_prefix(self, cut: str) -> nn.Sequential:
        """The teacher's own layers up to ``cut`` (shared modules, not copies)."""
        return nn.Sequential(*[s.module for s in self._stages[: self._cuts[cut]]])

    def check_width(self, split: str, width: float | None) -> None:
        """Every width rule in one place: a slimmable split needs one of its widths, others none."""
        if split not in self.branch_splits or not self.branch(split).slimmable:
            super().check_width(split, width)
            return
        branch = self.branch(split)
        if width is None:
            raise SplitError(f"split {split!r} is slimmable: the request must carry its width")
        if width not in branch.widths:
            raise SplitError(f"width {width} is not one of {split!r}'s widths {list(branch.widths)}")

    def check_features(self, features: OrderedDict[str, Tensor], split: str, width: float | None = None) -> None:
        """Names, shapes and values of what arrived; for a slimmable split, channels that match ``width``
        (or, without one, any of its widths)."""
        if split in self.branch_splits and self.branch(split).slimmable:
            branch = self.branch(split)
            y = features.get(LATENT)
            if list(features) != [LATENT] or y is None or y.dim() != 4 or y.shape[0] != 1:
                raise SplitError(f"split {split!r} expects one latent [1, C, H, W] named {LATENT!r}")
            if y.shape[1] not in branch.channel_options():
                raise SplitError(
                    f"latent of {y.shape[1]} channels matches no width of {split!r} "
                    f"(channels {branch.channel_options()})"
                )
            if width is not None and y.shape[1] != branch.channels(width):
                raise SplitError(
                    f"width {width} means {branch.channels(width)} latent channels, the payload has {y.shape[1]}"
                )
            if not torch.isfinite(y).all():
                raise SplitError(f"tensor {LATENT!r} contains NaN or infinite values")
            return
        super().check_features(features, split)

    def head_from_batch(self, batch: Tensor, split: str) -> OrderedDict[str, Tensor]:
        if split not in self.branch_splits:
            return super().head_from_batch(batch, split)
        return OrderedDict([(LATENT, self.branch(split).encode(batch))])

    def tail(self, features: OrderedDict[str, Tensor], meta: FrameMeta, split: str) -> dict[str, Tensor]:
        if split not in self.branch_splits:
            return super().tail(features, meta, split)
        return self.tail_batch([(features, meta)], split)[0]

    def tail_batch(
        self, frames: list[tuple[OrderedDict[str, Tensor], FrameMeta]], split: str
    ) -> list[dict[str, Tensor]]:
        if split not in self.branch_splits:
            return super().tail_batch(frames, split)
        branch = self.branch(split)
        cut = branch.config.cut
        name = self._specs[cut][0].name
        # Decoded one by one (each frame may have its own width), then the rest as one batch.
        restored = [(OrderedDict([(name, branch.decode(f[LATENT]))]), meta) for f, meta in frames]
        return super().tail_batch(restored, cut)

    def prefilter_features(self, images: Tensor) -> Tensor:
        """The teacher's tensor at the prefilter's cut, for a normalised batch."""
        return self.teacher_prefix(self.prefilter_cut)(images)

    def shares_prefilter_input(self, split: str) -> bool:
        """True when ``split``'s head computes the prefilter's input on the way (a frozen student at its cut)."""
        return self.prefilter is not None and self.shares_cut(split, self.prefilter_cut)

    def shares_cut(self, split: str, cut: str) -> bool:
        """True when ``split``'s head passes through the teacher's own tensor at ``cut`` (a frozen student there)."""
        if split not in self.branch_splits:
            return False
        cached = getattr(self, "_shared_prefix", None)
        if cached is None or cached[0] != self.fingerprint():
            cached = (self.fingerprint(), {})
            self._shared_prefix = cached
        if (split, cut) not in cached[1]:
            branch = self.branch(split)
            same = branch.config.cut == cut
            if same:
                teacher = self.teacher_prefix(cut).state_dict()
                student = branch.student.state_dict()
                same = teacher.keys() == student.keys() and all(torch.equal(teacher[k], student[k]) for k in teacher)
            cached[1][(split, cut)] = same
        return cached[1][(split, cut)]

    # -- the head, the prefilter and the early exit ---------------------------------------------------
    def run_head(
        self, image: Tensor, split: str, prefilter: float | bool | None = None, keep_cut: bool = False
    ) -> HeadResult:
        """One pass over the layers the head, the prefilter and the early exit share (see `SplitModel`)."""
        if prefilter is None or prefilter is False:  # (0.0 is a threshold)
            if split == INPUT_SPLIT:
                return HeadResult(*self.head(image, split))
            features, meta, cut = self._head_keeping_cut(*self.preprocess(image), split)
            return HeadResult(features, meta, cut=cut if keep_cut else None)
        if self.prefilter is None:
            raise SplitError(f"model {self.name!r} has no prefilter")
        threshold = float(self.prefilter.threshold) if prefilter is True else float(prefilter)
        batch, meta = self.preprocess(image)
        if self.shares_prefilter_input(split):
            branch = self.branch(split)
            cut_features = branch.student(batch)
            score = self._score(cut_features)
            if score < threshold:
                return HeadResult(None, None, score)
            exit_input = cut_features if keep_cut and self._exit_reads(split) else None
            return HeadResult(OrderedDict([(LATENT, branch.latent(cut_features, None))]), meta, score, exit_input)
        score = self._score(self.prefilter_features(batch))
        if score < threshold:
            return HeadResult(None, None, score)
        if split == INPUT_SPLIT:
            return HeadResult(*self.head(image, split), score)
        features, meta, cut = self._head_keeping_cut(batch, meta, split)
        return HeadResult(features, meta, score, cut if keep_cut else None)

    def _head_keeping_cut(
        self, batch: Tensor, meta: FrameMeta, split: str
    ) -> tuple[OrderedDict[str, Tensor], FrameMeta, Tensor | None]:
        if not self._exit_reads(split):
            return self.head_from_batch(batch, split), meta, None
        branch = self.branch(split)
        cut_features = branch.student(batch)
        return OrderedDict([(LATENT, branch.latent(cut_features, None))]), meta, cut_features

    def exit_from_cut(self, cut_features: Tensor, meta: FrameMeta) -> dict[str, Tensor]:
        """The early exit's detections, in the original image's coordinates, from the tensor at its cut."""
        if self.early_exit is None:
            raise SplitError(f"model {self.name!r} has no early exit")
        images = shape_only_images(cut_features, meta.batch_size_hw, [meta.resized_size])
        detections = self.early_exit.detect(cut_features, images)
        return self.detector.transform.postprocess(detections, images.image_sizes, [meta.original_size])[0]

    def exit_detect(self, image: Tensor) -> dict[str, Tensor]:
        """The early exit run from the image: the teacher's layers up to the cut, then the exit."""
        if self.early_exit is None:
            raise SplitError(f"model {self.name!r} has no early exit")
        batch, meta = self.preprocess(image)
        return self.exit_from_cut(self.teacher_prefix(self.early_exit.cut)(batch), meta)

    def _exit_reads(self, split: str) -> bool:
        return self.early_exit is not None and self.shares_cut(split, self.early_exit.cut)

    def prefilter_score(self, image: Tensor) -> float:
        """Probability that ``image`` (CHW in [0, 1]) holds an object of interest."""
        if self.prefilter is None:
            raise SplitError(f"model {self.name!r} has no prefilter")
        return self._score(self.prefilter_features(self.preprocess(image)[0]))

    def _score(self, cut_features: Tensor) -> float:
        return float(torch.sigmoid(self.prefilter(cut_features))[0])

    def update(self) -> None:
        """Build every entropy model's CDF tables (after training, before compress)."""
        for branch in self.branches.values():
            branch.update(force=True)
