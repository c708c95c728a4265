"""The self-describing container that carries feature tensors on the wire.

Layout (little-endian)::

    magic "SRTF" | version u8 | flags u8 (bit 0: body is zstd-compressed)
    body:  count u16, then per tensor: name_len u8, name, ndim u8, dims u32*ndim,
           payload_len u32, payload (codec-specific)
    crc32 of the uncompressed body, u32

The container, not the codec, catches truncation and corruption, so every
feature codec reports them the same way.
"""

from __future__ import annotations

import struct
import zlib

import zstandard

from .base import CodecError

MAGIC = b"SRTF"
VERSION = 1
FLAG_ZSTD = 1
MAX_TENSORS = 64
MAX_NDIM = 8
#: Bound on the decompressed size so a tiny corrupt payload cannot exhaust memory.
MAX_BODY_BYTES = 1 << 27

TensorRecord = tuple[str, tuple[int, ...], bytes]


def pack(records: list[TensorRecord], compress: bool, level: int = 3) -> bytes:
    parts = [struct.pack("<H", len(records))]
    for name, shape, payload in records:
        raw_name = name.encode()
        parts.append(struct.pack("<B", len(raw_name)) + raw_name)
        parts.append(struct.pack(f"<B{len(shape)}I", len(shape), *shape))
        parts.append(struct.pack("<I", len(payload)))
        parts.append(payload)
    body = b"".join(parts)
    crc = zlib.crc32(body)
    flags = 0
    if compress:
        body = zstandard.ZstdCompressor(level=level).compress(body)
        flags |= FLAG_ZSTD
    return MAGIC + struct.pack("<BB", VERSION, flags) + body + struct.pack("<I", crc)


def unpack(payload: bytes, expect_compressed: bool) -> list[TensorRecord]:
    if len(payload) < 10:
        raise CodecError(f"feature bitstream truncated: {len(payload)} bytes is shorter than the 10-byte frame")
    if payload[:4] != MAGIC:
        raise CodecError("payload is not a splitrt feature bitstream (bad magic); was it encoded with an image codec?")
    version, flags = struct.unpack_from("<BB", payload, 4)
    if version != VERSION:
        raise CodecError(f"feature bitstream version {version} is not supported (expected {VERSION})")
    compressed = bool(flags & FLAG_ZSTD)
    if compressed != expect_compressed:
        raise CodecError(
            f"bitstream is {'zstd-compressed' if compressed else 'uncompressed'} but the codec "
            f"expects {'zstd-compressed' if expect_compressed else 'uncompressed'} data"
        )
    body = bytes(payload[6:-4])
    (crc,) = struct.unpack_from("<I", payload, len(payload) - 4)
    if compressed:
        try:
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_BODY_BYTES)
        except zstandard.ZstdError as exc:
            raise CodecError(f"zstd could not decompress the feature bitstream (corrupt or truncated): {exc}") from exc
    if zlib.crc32(body) != crc:
        raise CodecError("feature bitstream checksum mismatch: the payload was corrupted or truncated")
    return _parse_body(body)


def _parse_body(body: bytes) -> list[TensorRecord]:
    reader = _Reader(body)
    (count,) = reader.take("<H")
    if count > MAX_TENSORS:
        raise CodecError(f"feature bitstream claims {count} tensors (at most {MAX_TENSORS})")
    records = []
    for _ in range(count):
        (name_len,) = reader.take("<B")
        name = reader.raw(name_len).decode("utf-8", errors="replace")
        (ndim,) = reader.take("<B")
        if ndim > MAX_NDIM:
            raise CodecError(f"tensor {name!r} claims {ndim} dimensions (at most {MAX_NDIM})")
        shape = tuple(reader.take(f"<{ndim}I"))
        (size,) = reader.take("<I")
        records.append((name, shape, reader.raw(size)))
    if reader.remaining:
        raise CodecError(f"feature bitstream has {reader.remaining} unexpected trailing bytes")
    return records


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def raw(self, n: int) -> bytes:
        if n > self.remaining:
            raise CodecError(f"feature bitstream truncated: needed {n} more bytes, {self.remaining} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def take(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.raw(struct.calcsize(fmt)))
