"""Feature codecs: fp32, fp16 and per-channel int8, each optionally zstd-compressed."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

from . import bitstream
from .base import Codec, CodecError, PayloadLimits, clip


class TensorCodec(Codec):
    """A codec that packs each tensor independently into the shared bitstream."""

    kind = "features"
    base_name: str

    def __init__(self, compress: bool = False) -> None:
        self.compress = compress
        self.name = self.base_name + ("-zstd" if compress else "")

    def encode(self, features: OrderedDict[str, Tensor]) -> bytes:
        records = []
        for name, tensor in features.items():
            t = tensor.detach().to("cpu", torch.float32).contiguous()
            records.append((name, tuple(t.shape), self.pack_tensor(t)))
        return bitstream.pack(records, self.compress)

    def decode(self, payload: bytes, limits: PayloadLimits | None = None) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        max_body = bitstream.MAX_BODY_BYTES if limits is None else limits.max_body_bytes
        for name, shape, data in bitstream.unpack(payload, self.compress, max_body):
            if limits is not None:
                limits.check_shape(name, shape)
            if name in out:
                raise CodecError(f"tensor {clip(name)} appears twice in the bitstream")
            expected = self.payload_size(shape)
            if len(data) != expected:
                raise CodecError(
                    f"tensor {clip(name)} of shape {list(shape)} needs {expected} bytes "
                    f"for {self.base_name}, got {len(data)}"
                )
            out[name] = self.unpack_tensor(data, shape)
        return out

    def pack_tensor(self, t: Tensor) -> bytes:
        raise NotImplementedError

    def unpack_tensor(self, data: bytes, shape: tuple[int, ...]) -> Tensor:
        raise NotImplementedError

    def payload_size(self, shape: tuple[int, ...]) -> int:
        raise NotImplementedError


class Float32Codec(TensorCodec):
    """Lossless; the reference the others are compared with."""

    base_name = "fp32"

    def pack_tensor(self, t: Tensor) -> bytes:
        return t.numpy().astype("<f4", copy=False).tobytes()

    def unpack_tensor(self, data: bytes, shape: tuple[int, ...]) -> Tensor:
        return torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(shape).copy())

    def payload_size(self, shape: tuple[int, ...]) -> int:
        return 4 * math.prod(shape)


class Float16Codec(TensorCodec):
    base_name = "fp16"

    def pack_tensor(self, t: Tensor) -> bytes:
        return t.numpy().astype("<f2").tobytes()

    def unpack_tensor(self, data: bytes, shape: tuple[int, ...]) -> Tensor:
        return torch.from_numpy(np.frombuffer(data, dtype="<f2").reshape(shape).astype(np.float32))

    def payload_size(self, shape: tuple[int, ...]) -> int:
        return 2 * math.prod(shape)


class Int8Codec(TensorCodec):
    """Per-channel affine quantisation to 8 bits: x ~ low + scale * q.

    Each channel (dimension 1) gets its own range, because feature channels
    after ReLU differ in scale by orders of magnitude.  Payload: ``low`` and
    ``scale`` as fp32 per channel, then the uint8 codes.
    """

    base_name = "int8"

    def pack_tensor(self, t: Tensor) -> bytes:
        if t.dim() < 2:  # a vector is one channel
            t = t.reshape(1, 1, -1)
        channels = t.shape[1]
        per_channel = t.transpose(0, 1).reshape(channels, -1)
        low = per_channel.min(dim=1).values
        high = per_channel.max(dim=1).values
        scale = (high - low) / 255.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        view = [1, channels] + [1] * (t.dim() - 2)
        codes = torch.round((t - low.view(view)) / scale.view(view)).clamp_(0, 255).to(torch.uint8)
        return low.numpy().astype("<f4").tobytes() + scale.numpy().astype("<f4").tobytes() + codes.numpy().tobytes()

    def unpack_tensor(self, data: bytes, shape: tuple[int, ...]) -> Tensor:
        work_shape = shape if len(shape) >= 2 else (1, 1, math.prod(shape))
        channels = work_shape[1]
        low = np.frombuffer(data, dtype="<f4", count=channels)
        scale = np.frombuffer(data, dtype="<f4", count=channels, offset=4 * channels)
        if not (np.isfinite(low).all() and np.isfinite(scale).all()):
            raise CodecError("int8 bitstream carries non-finite quantisation parameters")
        codes = np.frombuffer(data, dtype=np.uint8, offset=8 * channels).reshape(work_shape)
        view = [1, channels] + [1] * (len(work_shape) - 2)
        values = low.reshape(view) + scale.reshape(view) * codes.astype(np.float32)
        return torch.from_numpy(values.astype(np.float32).reshape(shape))

    def payload_size(self, shape: tuple[int, ...]) -> int:
        channels = shape[1] if len(shape) >= 2 else 1
        return 8 * channels + math.prod(shape)
