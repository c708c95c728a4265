"""The codec interface and the codec registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from torch import Tensor

CodecKind = Literal["features", "image", "local"]


class CodecError(ValueError):
    """A payload that cannot be decoded (corrupt, truncated, wrong format) or input that cannot be encoded."""


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
    def decode(self, payload: bytes) -> OrderedDict[str, Tensor]: ...

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
    raise CodecError(f"unknown codec {name!r}; registered: {', '.join(list_codecs())}")


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
