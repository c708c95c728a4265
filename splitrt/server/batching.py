"""Cross-client dynamic batching of tail work, per model and split point.

Frames decoded by the server wait in one queue per model.  The batcher takes
the first waiting frame, then waits up to ``max_delay_s`` for more of the
same split (or until ``max_batch`` are there) and runs them as one tail
call on the model's worker thread.  While a batch runs, new frames queue up,
so under load the next batch forms at once and batches grow by themselves
(what Triton's dynamic batcher does); when the server is idle a frame waits
at most ``max_delay_s``.  Each frame's queue time (enqueue to batch start)
goes back to the edge as ``splitrt.queue_us``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from torch import Tensor

from ..models.base import FrameMeta

log = logging.getLogger("splitrt.server")


@dataclass
class _Waiting:
    features: OrderedDict[str, Tensor]
    meta: FrameMeta
    split: str
    future: asyncio.Future = field(repr=False)


class TailBatcher:
    def __init__(self, served, max_batch: int, max_delay_s: float) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_delay_s < 0:
            raise ValueError("the batch delay cannot be negative")
        self.served = served
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._waiting: list[_Waiting] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.frames = 0

    async def submit(
        self, features: OrderedDict[str, Tensor], meta: FrameMeta, split: str
    ) -> tuple[dict[str, Tensor], int, int, int]:
        """The frame's outputs, its batch's start and end (ns) and size, once its batch has run."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.served.name}")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(features, meta, split, future))
        self._arrived.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            split = self._waiting[0].split
            deadline = loop.time() + self.max_delay_s
            while self._count(split) < self.max_batch and (wait := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), wait)
                except TimeoutError:
                    break
            batch = self._take(split)
            try:
                results, start, end = await loop.run_in_executor(
                    self.served.tail_worker, self.served.tail_batch, [(w.features, w.meta) for w in batch], split
                )
            except Exception as exc:  # the batch fails as a whole; each frame gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            self.frames += len(batch)
            for item, outputs in zip(batch, results):
                if not item.future.done():  # the caller may have gone (cancelled stream)
                    item.future.set_result((outputs, start, end, len(batch)))

    def _count(self, split: str) -> int:
        return sum(1 for w in self._waiting if w.split == split)

    def _take(self, split: str) -> list[_Waiting]:
        batch, rest = [], []
        for item in self._waiting:
            (batch if item.split == split and len(batch) < self.max_batch else rest).append(item)
        self._waiting = rest
        return batch

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for item in self._waiting:
            if not item.future.done():
                item.future.cancel()
        self._waiting.clear()
