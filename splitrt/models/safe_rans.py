"""Bounded rANS decoding of CompressAI's factorized-prior bitstreams, whatever the bytes.

CompressAI's C++ decoder trusts its input: it reads the string one 32-bit
word at a time with no end check.  Two things make the number of words it
can read unbounded by the string: each symbol's renormalisation (one word at
most), and *bypass* (escape) coding, where the last symbol of every CDF
announces a raw value whose nibble count is itself read from the stream, so a
hostile string can make one symbol read without limit.

The fix used here, and why it holds:

* **No escapes on the wire.** The encoder clamps every symbol into the CDF's
  regular support (values past it have probability below the tails'
  ``likelihood_bound``; the clamp moves them by at most that tail).
* **No escapes in the decoder.** The decoder gets each CDF with one extra
  entry past its end.  It decodes symbol ``s`` as the last index whose CDF
  value is <= the 16-bit cumulative frequency, which is at most ``len - 2``
  because the CDF's last real entry is 2**16; with the extra entry the
  escape index becomes ``len - 1``, which no frequency can reach.  So the
  bypass branch never runs.
* **Then every read is counted**: two words to initialise the state and at
  most one word per decoded symbol.  The string is zero-padded to
  ``4 * (2 + symbols)`` bytes before the decoder sees it, so every read lands
  inside the buffer.

Before that, the string's length is checked against what the declared shape
can need (each symbol costs between -log2 of its CDF's largest and smallest
probability), so a few bytes cannot claim a large latent, and afterwards
every decoded symbol is checked to be one the tables can produce.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.ans import RansDecoder

PRECISION = 16
#: Words the decoder reads besides one per symbol (its 64-bit initial state).
_INIT_WORDS = 2
#: Bytes a rANS64 stream carries beyond its information content: the flushed state, word rounding.
_FLUSH_BYTES = 8
_WORD_BYTES = 4


class RansBoundsError(ValueError):
    """A bitstream whose length or decoded symbols cannot come from these entropy tables."""


@dataclass(frozen=True)
class EscapeFreeTables:
    """One entropy bottleneck's CDFs as the bounded decoder uses them, with per-channel cost bounds."""

    cdfs: list[list[int]]
    sizes: list[int]
    offsets: list[int]
    #: Largest symbol value (before the offset) the encoder emits per channel.
    max_symbol: list[int]
    #: Bits per symbol at least / at most, per channel.
    min_bits: list[float]
    max_bits: list[float]

    @classmethod
    def from_cdf(cls, quantized: list[list[int]], lengths: list[int], offsets: list[int]) -> EscapeFreeTables:
        """From CompressAI's quantised CDF rows, their lengths and offsets (`SliceableEntropyBottleneck.tables`)."""
        cdfs, sizes, max_symbol, min_bits, max_bits = [], [], [], [], []
        for row, length in zip(quantized, lengths):
            cdf = [int(v) for v in row[:length]]
            if length < 3 or cdf[0] != 0 or cdf[-1] != 1 << PRECISION:
                raise ValueError("entropy tables are not CompressAI CDFs (call update() after training)")
            # The extra entry past 2**16 moves the escape index out of reach (see the module docstring).
            cdfs.append(cdf + [(1 << PRECISION) + 1])
            sizes.append(length + 1)
            max_symbol.append(length - 3)
            freqs = [cdf[i + 1] - cdf[i] for i in range(length - 2)]  # regular symbols, escape excluded
            min_bits.append(PRECISION - math.log2(max(freqs)))
            max_bits.append(PRECISION - math.log2(max(1, min(freqs))))
        return cls(cdfs, sizes, offsets, max_symbol, min_bits, max_bits)

    def symbol_range(self, channels: int) -> tuple[Tensor, Tensor]:
        """The lowest and highest symbols (offset applied) each of the first ``channels`` channels can carry."""
        low = torch.tensor(self.offsets[:channels], dtype=torch.float32)
        high = low + torch.tensor(self.max_symbol[:channels], dtype=torch.float32)
        return low, high

    def length_bounds(self, channels: int, pixels: int) -> tuple[int, int]:
        """The fewest and most bytes a stream of ``channels x pixels`` symbols can take."""
        low_bits = pixels * sum(self.min_bits[:channels])
        high_bits = pixels * sum(self.max_bits[:channels])
        low = max(_FLUSH_BYTES, math.floor(low_bits / 8) - _WORD_BYTES)
        high = math.ceil(high_bits / 8) + _FLUSH_BYTES + _WORD_BYTES
        return low, high


def clamp_to_support(y: Tensor, medians: Tensor, tables: EscapeFreeTables) -> Tensor:
    """``y`` with every value that would need an escape moved to the edge of its CDF's support."""
    low, high = tables.symbol_range(y.shape[1])
    view = (1, -1, *([1] * (y.dim() - 2)))
    low = low.to(y.device).view(view) + medians
    high = high.to(y.device).view(view) + medians
    return torch.maximum(torch.minimum(y, high), low)


def decode(string: bytes, channels: int, size: tuple[int, int], tables: EscapeFreeTables) -> Tensor:
    """The integer symbols (offset applied, medians not) of a [1, channels, H, W] latent, as float32."""
    if not 0 < channels <= len(tables.cdfs):
        raise RansBoundsError(f"latent of {channels} channels; these tables have {len(tables.cdfs)}")
    pixels = size[0] * size[1]
    symbols = channels * pixels
    low, high = tables.length_bounds(channels, pixels)
    if not low <= len(string) <= high:
        raise RansBoundsError(
            f"a [{channels}, {size[0]}, {size[1]}] latent takes {low}..{high} bytes of rANS; got {len(string)}"
        )
    needed = _WORD_BYTES * (_INIT_WORDS + symbols)
    padded = bytes(string) + bytes(max(0, needed - len(string)))
    indexes = torch.arange(channels, dtype=torch.int32).repeat_interleave(pixels).tolist()
    values = RansDecoder().decode_with_indexes(padded, indexes, tables.cdfs, tables.sizes, tables.offsets)
    out = torch.tensor(values, dtype=torch.float32).reshape(1, channels, *size)
    lowest, highest = tables.symbol_range(channels)
    view = (1, channels, 1, 1)
    if bool((out < lowest.view(view)).any()) or bool((out > highest.view(view)).any()):
        raise RansBoundsError("the rANS stream decodes to symbols outside the entropy tables' support")
    return out
