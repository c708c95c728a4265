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

import io
import struct
import zlib

import zstandard

from .base import CodecError, clip

MAGIC = b"SRTF"
VERSION = 1
FLAG_ZSTD = 1
MAX_TENSORS = 64
MAX_NDIM = 8
#: Bound on the decompressed size when the receiver gives none (tools, tests); servers pass their model's.
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


def unpack(payload: bytes, expect_compressed: bool, max_body_bytes: int = MAX_BODY_BYTES) -> list[TensorRecord]:
    """The records of a container; a body (after zstd) larger than ``max_body_bytes`` is refused unread."""
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
    body = memoryview(payload)[6:-4]
    (crc,) = struct.unpack_from("<I", payload, len(payload) - 4)
    if compressed:
        body = _inflate(body, max_body_bytes)
    elif len(body) > max_body_bytes:
        raise CodecError(f"feature bitstream body of {len(body)} bytes exceeds this frame's limit of {max_body_bytes}")
    if zlib.crc32(body) != crc:
        raise CodecError("feature bitstream checksum mismatch: the payload was corrupted or truncated")
    return _parse_body(bytes(body))


def _inflate(body: memoryview, limit: int) -> bytes:
    """zstd with a hard cap on the output, whatever the frame header claims.

    python-zstandard's ``max_output_size`` is ignored when the header declares a content
    size, so a declared size is checked first, and an undeclared one is streamed with a cap.
    """
    try:
        declared = zstandard.frame_content_size(body)
        if declared > limit:
            raise CodecError(f"zstd frame declares {declared} bytes, over this frame's limit of {limit}")
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=False)
        out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise CodecError(f"zstd could not decompress the feature bitstream (corrupt or truncated): {exc}") from None
    if len(out) > limit:
        raise CodecError(f"zstd frame inflates past this frame's limit of {limit} bytes")
    return out


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
            raise CodecError(f"tensor {clip(name)} claims {ndim} dimensions (at most {MAX_NDIM})")
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
