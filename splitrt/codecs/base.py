"""The codec interface and the codec registry."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

CodecKind = Literal["features", "image", "local"]


class CodecError(ValueError):
    """A payload that cannot be decoded (corrupt, truncated, wrong format) or input that cannot be encoded."""


#: Largest image (pixels) any codec decodes: DCI 4K, so a camera frame fits and a bomb does not.
MAX_IMAGE_PIXELS = 4096 * 2160
#: Largest side of an image, in pixels.
MAX_IMAGE_SIDE = 8192
#: Container bytes per tensor record besides its payload (name, dims, lengths), at most.
RECORD_OVERHEAD = 1 + 255 + 1 + 4 * 8 + 4


@dataclass(frozen=True)
class PayloadLimits:
    """The most a receiver will decode for one frame, from its model's limits (never from the request).

    ``max_shapes`` names every tensor the frame may carry with its largest shape; a
    codec refuses other names and larger shapes before it allocates anything.
    """

    max_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max_pixels: int = MAX_IMAGE_PIXELS
    max_side: int = MAX_IMAGE_SIDE

    @property
    def max_body_bytes(self) -> int:
        """Bytes of the container body that the largest legitimate frame needs (fp32 of every tensor)."""
        return 2 + sum(RECORD_OVERHEAD + 4 * math.prod(shape) for shape in self.max_shapes.values())

    def check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        """Refuse a tensor this frame cannot carry, naming the limit."""
        limit = self.max_shapes.get(name)
        if limit is None:
            names = ", ".join(map(repr, self.max_shapes)) or "none"
            raise CodecError(f"tensor {clip(name)} is not one this split carries ({names})")
        if len(shape) > len(limit) or any(d > m for d, m in zip(shape, limit)):
            raise CodecError(
                f"tensor {clip(name)} of shape {list(shape)} exceeds the limit {list(limit)} "
                "that the model's largest input gives"
            )

    def check_image(self, height: int, width: int) -> None:
        if height > self.max_side or width > self.max_side or height * width > self.max_pixels:
            raise CodecError(
                f"image of {width}x{height} pixels exceeds the limit of {self.max_pixels} pixels "
                f"({self.max_side} per side)"
            )


DEFAULT_LIMITS = PayloadLimits()


def clip(text: object, limit: int = 200) -> str:
    """``repr`` of an attacker-chosen string, cut to ``limit`` characters so errors and logs stay small."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"...(+{len(text) - limit} chars)"


class Codec(ABC):
    """Turns the tensors crossing a split into bytes and back.

    ``features`` codecs work at any split point after ``input``; ``image``
    codecs only at the ``input`` split (full offload) and see one tensor named
    ``image``; the ``local`` codec sends nothing (the edge runs everything).
    """

    name: str
    kind: CodecKind

    @abstractmethod
    def encode(self, features: OrderedDict[str, Tensor]) -> bytes: ...

    @abstractmethod
    def decode(self, payload: bytes, limits: PayloadLimits | None = None) -> OrderedDict[str, Tensor]:
        """The tensors back; ``limits`` (the receiving model's) bound every size before anything is allocated."""

    def __repr__(self) -> str:
        return f"<codec {self.name} ({self.kind})>"


CodecFactory = Callable[[], Codec]
#: Codecs that need the model's own entropy model or bottleneck: factory(model, split).
ModelCodecFactory = Callable[[Any, str], Codec]
_REGISTRY: dict[str, CodecFactory] = {}
_MODEL_BOUND: dict[str, ModelCodecFactory] = {}
_PARAMETRIC: dict[str, Callable[[str], Codec]] = {}


def register_codec(name: str, factory: CodecFactory) -> None:
    if name in _REGISTRY or name in _MODEL_BOUND:
        raise ValueError(f"codec {name!r} is already registered")
    _REGISTRY[name] = factory


def register_model_codec(name: str, factory: ModelCodecFactory) -> None:
    """A codec that works only with a model's learned parts (an entropy model, a bottleneck)."""
    if name in _REGISTRY or name in _MODEL_BOUND:
        raise ValueError(f"codec {name!r} is already registered")
    _MODEL_BOUND[name] = factory


def register_parametric_codec(prefix: str, factory: Callable[[str], Codec]) -> None:
    """Codecs named ``prefix:ARG`` (e.g. ``jpeg:50`` for JPEG at quality 50)."""
    _PARAMETRIC[prefix] = factory


def get_codec(name: str, model: Any = None, split: str | None = None) -> Codec:
    """A codec by name; model-bound codecs (``entropy``) also need the model and split point."""
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if name in _MODEL_BOUND:
        if model is None or split is None:
            raise CodecError(f"codec {name!r} needs the model and split point it belongs to")
        return _MODEL_BOUND[name](model, split)
    prefix, sep, arg = name.partition(":")
    if sep and prefix in _PARAMETRIC:
        return _PARAMETRIC[prefix](arg)
    raise CodecError(f"unknown codec {clip(name)}; registered: {', '.join(list_codecs())}")


def codec_kind(name: str) -> CodecKind:
    """The kind of a codec by name, without building it (model-bound codecs are feature codecs)."""
    if name in _MODEL_BOUND:
        return "features"
    return get_codec(name).kind


def list_codecs(kind: CodecKind | None = None, model_bound: bool = True) -> list[str]:
    """Registered codec names; ``model_bound=False`` leaves out those that need a model (``entropy``)."""
    plain = [n for n, f in _REGISTRY.items() if kind is None or f().kind == kind]
    bound = list(_MODEL_BOUND) if model_bound and kind in (None, "features") else []
    return plain + bound
