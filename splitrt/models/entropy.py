"""The one place that touches CompressAI's entropy-model internals.

`SliceableEntropyBottleneck` is CompressAI's factorized prior (one learned density per latent
channel) that also codes only the first k channels: a slimmable branch sends 8 of 32
channels with the same priors.  Its bitstreams are read by the bounded decoder in
`safe_rans` (no escapes, no unbounded loops), so any bytes at all are safe to decode.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

with warnings.catch_warnings():  # compressai's import warns about torch.jit.script deprecation
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.entropy_models import EntropyBottleneck
    from compressai.entropy_models.entropy_models import EntropyModel

from . import safe_rans

#: The buffers `update()` fills; their sizes depend on the trained densities.
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


class SliceableEntropyBottleneck(EntropyBottleneck):
    """A factorized prior over ``channels`` latent channels, any leading k of which are coded on their own."""

    @property
    def ready(self) -> bool:
        """Whether `update()` has built the CDF tables that coding needs."""
        return self._quantized_cdf.numel() > 0

    def forward_channels(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Training: quantised (noisy) latent and likelihoods of the first ``y.shape[1]`` channels."""
        k = y.shape[1]
        padded = nn.functional.pad(y, (0, 0, 0, 0, 0, self.channels - k))
        y_hat, likelihoods = self(padded)
        return y_hat[:, :k], likelihoods[:, :k]

    def medians(self, channels: int, spatial_dims: int = 2) -> Tensor:
        """Each channel's median, shaped to add to a latent of ``spatial_dims`` dimensions."""
        medians = self._get_medians().detach()[:channels]
        return medians.reshape(1, channels, *([1] * spatial_dims))

    def tables(self) -> safe_rans.EscapeFreeTables:
        """The bounded decoder's tables, rebuilt whenever `update()` or a load changed the CDFs."""
        cdf = self._quantized_cdf
        key = (cdf.data_ptr(), cdf._version, tuple(cdf.shape))
        cached = self.__dict__.get("_tables")
        if cached is None or cached[0] != key:
            cached = (
                key,
                safe_rans.EscapeFreeTables.from_cdf(
                    cdf.tolist(),
                    [int(n) for n in self._cdf_length.reshape(-1).tolist()],
                    [int(o) for o in self._offset.reshape(-1).tolist()],
                ),
            )
            self.__dict__["_tables"] = cached
        return cached[1]

    def compress_channels(self, y: Tensor) -> bytes:
        """The rANS string of the first ``y.shape[1]`` channels (batch of one), each with its own prior.

        Values past a CDF's support are clamped to it, so the string never needs an escape.
        """
        medians = self.medians(y.shape[1], y.dim() - 2)
        y = safe_rans.clamp_to_support(y, medians, self.tables())
        indexes = self._build_indexes(y.size())
        return EntropyModel.compress(self, y, indexes, medians.expand(y.size(0), -1, *([-1] * (y.dim() - 2))))[0]

    def decompress_channels(self, string: bytes, channels: int, size: tuple[int, ...]) -> Tensor:
        """The latent back from its string; raises ``safe_rans.RansBoundsError`` for an impossible one."""
        symbols = safe_rans.decode(string, channels, tuple(size), self.tables())
        return symbols.to(self._quantized_cdf.device) + self.medians(channels, len(size)).to(symbols.device)

    # -- loading saved tables ------------------------------------------------------------------------
    def fit_saved_tables(self, state: dict[str, Tensor], prefix: str) -> None:
        """Give the CDF buffers the shapes saved in ``state`` (they vary with training) before loading it."""
        for buffer in CDF_BUFFERS:
            saved = state.get(f"{prefix}{buffer}")
            if saved is not None:
                self._buffers[buffer] = torch.empty_like(saved)

    def tables_match_parameters(self) -> bool:
        """Whether the loaded CDF tables are exactly what these densities produce (else strings would not decode)."""
        saved = [getattr(self, b).clone() for b in CDF_BUFFERS]
        if saved[0].numel() == 0:
            return True
        self.update(force=True)
        return all(torch.equal(a, getattr(self, b)) for a, b in zip(saved, CDF_BUFFERS, strict=True))


def entropy_models(model: nn.Module) -> list[tuple[str, SliceableEntropyBottleneck]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SliceableEntropyBottleneck)]
