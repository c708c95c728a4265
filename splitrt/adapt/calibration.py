"""Online recalibration of ``p_in_time``: what the predictions of each range turned out to be.

``p_within`` judges a payload by the last few transfers, so on a link that
swings (a cellular uplink) a low prediction made from a bad spell is often
followed by a better one: low predictions come true more often than they
say.  The controller then leaves a link that would have carried most frames.
Rather than tune the estimator per link, the edge keeps score: per tenth of
the predicted range, how many of the frames predicted there were answered
in time, and moves a new prediction toward that share, more as frames
accumulate (``prior`` imagined frames at the raw prediction keep a few
outcomes from overruling it).
"""

from __future__ import annotations

BINS = 10


class OnlineCalibration:
    def __init__(self, prior: float = 10.0, memory: float = 200.0) -> None:
        self.prior = prior
        #: Each bin's (frames, frames in time), counts fading so the last ``memory`` frames matter most.
        self.counts = [[0.0, 0.0] for _ in range(BINS)]
        self.decay = 1.0 - 1.0 / memory

    @staticmethod
    def _bin(p: float) -> int:
        return min(BINS - 1, max(0, int(p * BINS)))

    def observe(self, predicted: float, in_time: bool) -> None:
        counts = self.counts[self._bin(predicted)]
        counts[0] = counts[0] * self.decay + 1.0
        counts[1] = counts[1] * self.decay + float(in_time)

    def correct(self, p: float) -> float:
        frames, hits = self.counts[self._bin(p)]
        return (hits + self.prior * p) / (frames + self.prior)
