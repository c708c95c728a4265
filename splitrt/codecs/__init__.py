"""Codecs for what crosses the split, in one registry keyed by name.

Feature codecs: ``fp32``, ``fp16``, ``int8`` and their ``-zstd`` variants.
Image codecs (full offload): ``jpeg``, ``png``, ``webp``, ``raw``, with an
optional quality suffix (``jpeg:50``); ``image`` decodes any format PIL reads
(what plain KServe/Triton clients send).
Learned-bottleneck codecs, bound to a model and split: ``entropy`` (rANS
bitstream of a factorized-prior latent) and ``bottleneck-int8-zstd``.  ``local`` means nothing is sent.
"""

from .base import (
    Codec,
    CodecError,
    codec_kind,
    get_codec,
    list_codecs,
    register_codec,
    register_model_codec,
    register_parametric_codec,
)
from .features import Float16Codec, Float32Codec, Int8Codec
from .images import LocalCodec, PillowImageCodec, RawImageCodec, decode_image_bytes
from .learned import BottleneckInt8Codec, EntropyCodec

DEFAULT_JPEG_QUALITY = 90
DEFAULT_WEBP_QUALITY = 80


def _quality(fmt: str, arg: str) -> int:
    try:
        return int(arg)
    except ValueError:
        raise CodecError(f"{fmt} quality must be an integer, got {arg!r}") from None


for _cls in (Float32Codec, Float16Codec, Int8Codec):
    register_codec(_cls.base_name, lambda c=_cls: c(compress=False))
    register_codec(_cls.base_name + "-zstd", lambda c=_cls: c(compress=True))
register_codec("jpeg", lambda: PillowImageCodec("JPEG", DEFAULT_JPEG_QUALITY))
register_codec("webp", lambda: PillowImageCodec("WEBP", DEFAULT_WEBP_QUALITY))
register_codec("png", lambda: PillowImageCodec("PNG"))
register_codec("raw", RawImageCodec)
# What a plain KServe/Triton client's image is decoded with: any format PIL reads.
register_codec("image", lambda: PillowImageCodec("PNG", name="image"))
register_codec("local", LocalCodec)
register_model_codec("entropy", EntropyCodec)
register_model_codec("bottleneck-int8-zstd", BottleneckInt8Codec)
register_parametric_codec("jpeg", lambda q: PillowImageCodec("JPEG", _quality("jpeg", q)))
register_parametric_codec("webp", lambda q: PillowImageCodec("WEBP", _quality("webp", q)))

__all__ = [
    "Codec",
    "CodecError",
    "codec_kind",
    "decode_image_bytes",
    "get_codec",
    "list_codecs",
    "register_codec",
    "register_model_codec",
    "register_parametric_codec",
]
