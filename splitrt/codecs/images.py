"""Input codecs for full offload: the edge sends the image itself."""

from __future__ import annotations

import io
import struct
import warnings
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .base import DEFAULT_LIMITS, Codec, CodecError, PayloadLimits

RAW_MAGIC = b"SRTR"
#: The formats a server decodes: what cameras, PIL, OpenCV and ffmpeg write; nothing exotic to attack.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def image_tensor_to_uint8(features: OrderedDict[str, Tensor]) -> np.ndarray:
    """The ``image`` tensor ([1, 3, H, W] float in [0, 1]) as HxWx3 uint8."""
    if list(features) != ["image"]:
        raise CodecError(f"image codecs encode only the 'input' split (one tensor 'image'), got {list(features)}")
    t = features["image"]
    if t.dim() != 4 or t.shape[:2] != (1, 3):
        raise CodecError(f"image tensor must be [1, 3, H, W], got {tuple(t.shape)}")
    return (t[0].detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def uint8_to_image_tensor(array: np.ndarray) -> OrderedDict[str, Tensor]:
    tensor = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).float().div_(255.0)
    return OrderedDict(image=tensor.unsqueeze(0))


def decode_image_bytes(payload: bytes, limits: PayloadLimits = DEFAULT_LIMITS) -> np.ndarray:
    """A JPEG, PNG or WebP to HxWx3 uint8 RGB, strictly: a truncated or oversized image is refused.

    The size is checked from the header before any pixel is decoded.
    """
    try:
        with Image.open(io.BytesIO(payload), formats=ACCEPTED_FORMATS) as img:
            limits.check_image(img.height, img.width)
            _check_complete(payload, img.format)
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
            return np.asarray(img.convert("RGB"))
    except CodecError:
        raise
    except Exception as exc:  # PIL raises many types for bad data
        raise CodecError(f"could not decode image payload ({len(payload)} bytes): {exc}") from None


def _check_complete(payload: bytes, fmt: str | None) -> None:
    """Lenient decoders fill a cut-off image with grey; refuse any image whose end marker is missing."""
    if fmt == "JPEG":
        complete = payload.rstrip(b"\x00").endswith(b"\xff\xd9")
    elif fmt == "PNG":
        complete = payload.endswith(_PNG_END)
    elif fmt == "WEBP":
        (size,) = struct.unpack_from("<I", payload, 4)
        complete = size + 8 in (len(payload), len(payload) - 1)
    else:
        complete = False
    if not complete:
        raise CodecError(f"{fmt} image of {len(payload)} bytes is truncated or has trailing data (no end marker)")


class PillowImageCodec(Codec):
    kind = "image"

    def __init__(self, fmt: str, quality: int | None = None, name: str | None = None, **save_args: object) -> None:
        if quality is not None and not 1 <= quality <= 100:
            raise CodecError(f"{fmt} quality must be in 1..100, got {quality}")
        self.format = fmt
        self.quality = quality
        self.save_args = save_args
        self.name = name or fmt.lower() + (f":{quality}" if quality is not None else "")

    def encode(self, features: OrderedDict[str, Tensor]) -> bytes:
        buffer = io.BytesIO()
        args = dict(self.save_args)
        if self.quality is not None:
            args["quality"] = self.quality
        Image.fromarray(image_tensor_to_uint8(features)).save(buffer, format=self.format, **args)
        return buffer.getvalue()

    def decode(self, payload: bytes, limits: PayloadLimits | None = None) -> OrderedDict[str, Tensor]:
        # Any accepted format, whatever this codec itself writes.
        return uint8_to_image_tensor(decode_image_bytes(payload, limits or DEFAULT_LIMITS))


class RawImageCodec(Codec):
    """Uncompressed 8-bit RGB: magic, height u32, width u32, pixels."""

    kind = "image"
    name = "raw"

    def encode(self, features: OrderedDict[str, Tensor]) -> bytes:
        array = image_tensor_to_uint8(features)
        return RAW_MAGIC + struct.pack("<II", array.shape[0], array.shape[1]) + array.tobytes()

    def decode(self, payload: bytes, limits: PayloadLimits | None = None) -> OrderedDict[str, Tensor]:
        if len(payload) < 12 or payload[:4] != RAW_MAGIC:
            raise CodecError("payload is not a raw splitrt image (bad magic or too short)")
        height, width = struct.unpack_from("<II", payload, 4)
        (limits or DEFAULT_LIMITS).check_image(height, width)
        expected = 12 + 3 * height * width
        if len(payload) != expected:
            raise CodecError(f"raw image of {width}x{height} needs {expected} bytes, got {len(payload)}")
        return uint8_to_image_tensor(np.frombuffer(payload, np.uint8, offset=12).reshape(height, width, 3))


class LocalCodec(Codec):
    """No network: the edge runs the whole model itself."""

    kind = "local"
    name = "local"

    def encode(self, features: OrderedDict[str, Tensor]) -> bytes:
        raise CodecError("the local codec sends nothing; run the full model on the edge instead")

    def decode(self, payload: bytes, limits: PayloadLimits | None = None) -> OrderedDict[str, Tensor]:
        raise CodecError("the local codec sends nothing; a server never receives it")
