"""Codecs for learned bottlenecks: the entropy-coded latent, and int8+zstd of a plain bottleneck."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from ..models.safe_rans import RansBoundsError
from . import bitstream
from .base import Codec, CodecError, PayloadLimits
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
        if self.branch.entropy_bottleneck is None:
            raise CodecError(f"split {split!r} is a plain bottleneck; use bottleneck-int8-zstd, not entropy")
        if not self.branch.entropy_bottleneck.ready:
            raise CodecError(f"the entropy model of {split!r} has no CDF tables; call update() after training")

    def encode(self, features: OrderedDict[str, Tensor]) -> bytes:
        if list(features) != [LATENT]:
            raise CodecError(f"entropy codec encodes the bottleneck latent {LATENT!r}, got {list(features)}")
        y = features[LATENT].detach().to(next(self.branch.parameters()).device)
        string = self.branch.compress_latent(y)
        return bitstream.pack([(LATENT, tuple(y.shape), string)], compress=False)

    def decode(self, payload: bytes, limits: PayloadLimits | None = None) -> OrderedDict[str, Tensor]:
        max_body = bitstream.MAX_BODY_BYTES if limits is None else limits.max_body_bytes
        records = bitstream.unpack(payload, expect_compressed=False, max_body_bytes=max_body)
        if len(records) != 1 or records[0][0] != LATENT or len(records[0][1]) != 4:
            raise CodecError("entropy bitstream must hold exactly one 4-D latent named 'y'")
        _, shape, string = records[0]
        if limits is not None:
            limits.check_shape(LATENT, shape)
        options = self.branch.channel_options()
        if shape[0] != 1 or shape[1] not in options or 0 in shape[2:]:
            raise CodecError(f"entropy latent of shape {list(shape)} does not fit this model ([1, {options}, H, W])")
        try:
            with torch.inference_mode():
                y_hat = self.branch.decompress_latent(string, shape[2:], shape[1])
        except RansBoundsError as exc:
            raise CodecError(f"entropy bitstream refused: {exc}") from None
        return OrderedDict([(LATENT, y_hat.cpu())])


class BottleneckInt8Codec(Int8Codec):
    """int8 + zstd of a plain (not entropy-coded) bottleneck latent."""

    def __init__(self, model: Any, split: str) -> None:
        super().__init__(compress=True)
        _branch(model, split)
        self.name = "bottleneck-int8-zstd"
