"""A backbone seen as a flat list of stages, so it can be cut between any two."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class Stage:
    """One module of a backbone run in sequence.

    ``emits`` names the output when later parts of the network (an FPN, a
    detection head) consume it in addition to the next stage.
    """

    module: nn.Module
    emits: str | None = None


#: Key of the running activation when it is not itself an emitted output.
CARRY = "x"


def run_stages(stages: list[Stage], x: Tensor, emitted: OrderedDict[str, Tensor], start: int, stop: int) -> Tensor:
    """Run ``stages[start:stop]`` on ``x``, adding emitted outputs in place."""
    for stage in stages[start:stop]:
        x = stage.module(x)
        if stage.emits is not None:
            emitted[stage.emits] = x
    return x


def cut_features(
    stages: list[Stage], x: Tensor, emitted: OrderedDict[str, Tensor], stop: int
) -> OrderedDict[str, Tensor]:
    """The tensors that must cross a cut after ``stages[:stop]``.

    Everything already emitted, plus the running activation unless the last
    stage emitted it (then it is already included, and sending it twice would
    double the bytes on the wire).
    """
    out = OrderedDict(emitted)
    last_emitted = stop > 0 and stages[stop - 1].emits is not None
    if stop < len(stages) and not last_emitted:
        out[CARRY] = x
    return out


def resume(
    stages: list[Stage], features: OrderedDict[str, Tensor], start: int
) -> tuple[Tensor, OrderedDict[str, Tensor]]:
    """Recover the running activation and the emitted outputs after a cut."""
    emitted = OrderedDict((k, v) for k, v in features.items() if k != CARRY)
    if CARRY in features:
        return features[CARRY], emitted
    return emitted[stages[start - 1].emits], emitted  # type: ignore[index]


def cut_channels(stages: list[Stage], probe: Tensor, stop: int) -> list[tuple[str, int, float]]:
    """Names, channel counts and strides of the tensors crossing a cut, found by running a tiny probe."""
    emitted: OrderedDict[str, Tensor] = OrderedDict()
    x = run_stages(stages, probe, emitted, 0, stop)
    out = cut_features(stages, x, emitted, stop)
    return [(k, int(v.shape[1]), probe_stride(probe, v)) for k, v in out.items()]


def probe_stride(probe: Tensor, output: Tensor) -> float | None:
    """Input pixels per output pixel, when the probe's output is large enough to tell (else None)."""
    if output.dim() != 4 or output.shape[-2] <= 2:
        return None
    return probe.shape[-2] / output.shape[-2]
