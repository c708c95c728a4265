"""Codecs for learned bottlenecks: the entropy-coded latent, and int8+zstd of a plain bottleneck."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from . import bitstream
from .base import Codec, CodecError
from .features import Int8Codec

LATENT = "y"


def _branch(model: Any, split: str):
    branch = getattr(model, "branch", None)
    if branch is None:
        raise CodecError(f"model {getattr(model, 'name', model)!r} has no learned bottlenecks")
    try:
        return branch(split)
    except ValueError as exc:
        raise CodecError(str(exc)) from exc


class EntropyCodec(Codec):
    """The factorized-prior latent as a real rANS bitstream (CompressAI), inside the checked container."""

    kind = "features"
    name = "entropy"

    def __init__(self, model: Any, split: str) -> None:
        self.branch = _branch(model, split)
        self.max_hw = (4096, 4096)
        if self.branch.entropy_bottleneck is None:
            raise CodecError(f"split {split!r} is a plain bottleneck; use bottleneck-int8-zstd, not entropy")
        if self.branch.entropy_bottleneck._quantized_cdf.numel() == 0:
            raise CodecError(f"the entropy model of {split!r} has no CDF tables; call update() after training")

    def encode(self, features: OrderedDict[str, Tensor]) -> bytes:
        if list(features) != [LATENT]:
            raise CodecError(f"entropy codec encodes the bottleneck latent {LATENT!r}, got {list(features)}")
        y = features[LATENT].detach().to(next(self.branch.parameters()).device)
        string = self.branch.compress(y)
        return bitstream.pack([(LATENT, tuple(y.shape), string)], compress=False)

    def limit_latent(self, height: int, width: int) -> None:
        """Refuse latents larger than this before decoding: a few bytes of rANS could claim millions of symbols."""
        self.max_hw = (height, width)

    def decode(self, payload: bytes) -> OrderedDict[str, Tensor]:
        records = bitstream.unpack(payload, expect_compressed=False)
        if len(records) != 1 or records[0][0] != LATENT or len(records[0][1]) != 4:
            raise CodecError("entropy bitstream must hold exactly one 4-D latent named 'y'")
        _, shape, string = records[0]
        options = self.branch.channel_options()
        max_h, max_w = self.max_hw
        if shape[0] != 1 or shape[1] not in options or not (0 < shape[2] <= max_h and 0 < shape[3] <= max_w):
            raise CodecError(
                f"entropy latent of shape {list(shape)} does not fit this model and frame "
                f"([1, {options}, <={max_h}, <={max_w}])"
            )
        with torch.inference_mode():
            y_hat = self.branch.decompress(string, shape[2:], shape[1])
        return OrderedDict([(LATENT, y_hat.cpu())])


class BottleneckInt8Codec(Int8Codec):
    """int8 + zstd of a plain (not entropy-coded) bottleneck latent."""

    def __init__(self, model: Any, split: str) -> None:
        super().__init__(compress=True)
        _branch(model, split)
        self.name = "bottleneck-int8-zstd"
