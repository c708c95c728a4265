"""Admission control: bounded queues per model and server-wide, served round-robin by client.

A frame is *admitted* when it arrives (before it is decoded) and leaves when its
answer is ready.  Each model runs at most ``concurrency`` frames at once; the
rest wait in one queue per client, and a finished frame hands its turn to the
next client in rotation, so a client that floods (or sends only the most
expensive frames a model allows) gets one turn in N, never the whole model.
When a queue is full the frame is refused at once with the limit it hit:
overload is an answer (RESOURCE_EXHAUSTED), never a silent wait.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


class Overloaded(Exception):
    """No room for this frame; the message names the limit."""


@dataclass
class AdmissionLimits:
    #: Frames of one model decoded or run at once (more lets batches form, fewer keeps turns short).
    concurrency: int = 2
    #: Frames waiting for one model, all clients together.
    max_queued: int = 64
    #: Frames waiting for one model from one client.
    max_queued_per_client: int = 16
    #: Frames admitted (waiting or running) across all models.
    max_total: int = 256


class ServerBudget:
    """The server-wide count of admitted frames."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted = 0

    @property
    def full(self) -> bool:
        return self.admitted >= self.limit


class FairQueue:
    """One model's admission: ``concurrency`` running, the rest queued per client, turns round-robin."""

    def __init__(self, name: str, limits: AdmissionLimits, budget: ServerBudget) -> None:
        self.name = name
        self.limits = limits
        self.budget = budget
        self.running = 0
        self.queued = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()
        self.refused = 0

    @property
    def saturated(self) -> bool:
        """True while new frames would be refused (readiness reports it)."""
        return self.queued >= self.limits.max_queued or self.budget.full

    @asynccontextmanager
    async def slot(self, client: str) -> AsyncIterator[None]:
        """Hold a turn for one frame of ``client``; raises Overloaded at once when there is no room."""
        await self.enter(client)
        try:
            yield
        finally:
            self.leave()

    def try_enter(self) -> bool:
        """Take a turn if one is free and nobody waits: the common case, with no coroutine to run.
        False means `enter` decides (wait in line, or refuse)."""
        if self.running < self.limits.concurrency and not self._waiting and not self.budget.full:
            self.running += 1
            self.budget.admitted += 1
            return True
        return False

    async def enter(self, client: str) -> None:
        """Take a turn for one frame of ``client``, waiting in line; raises Overloaded when there is no
        room.  Every turn taken is given back with `leave`."""
        if self.budget.full:
            self._refuse(f"the server holds {self.budget.admitted} frames, its limit (--max-queued-total)")
        if self.try_enter():
            return
        mine = self._waiting.get(client)
        if self.queued >= self.limits.max_queued:
            self._refuse(f"model {self.name!r} has {self.queued} frames waiting, its limit (--max-queue)")
        if mine is not None and len(mine) >= self.limits.max_queued_per_client:
            self._refuse(
                f"this client has {len(mine)} frames waiting for {self.name!r}, "
                "the per-client limit (--max-queue-per-client)"
            )
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, deque()).append(future)
        self.queued += 1
        self.budget.admitted += 1
        try:
            await future  # resolved by leave with the turn already counted as running
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.leave()  # the turn was granted just as the caller went away
            else:
                self._forget(client, future)
            raise

    def _refuse(self, why: str) -> None:
        self.refused += 1
        raise Overloaded(f"server overloaded: {why}; retry later or slow down")

    def _forget(self, client: str, future: asyncio.Future) -> None:
        queue = self._waiting.get(client)
        if queue is not None and future in queue:
            queue.remove(future)
            self.queued -= 1
            self.budget.admitted -= 1
            if not queue:
                del self._waiting[client]

    def leave(self) -> None:
        """Give a turn back; the next waiting client (round robin) gets it."""
        self.running -= 1
        self.budget.admitted -= 1
        while self._waiting and self.running < self.limits.concurrency:
            client, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            self.queued -= 1
            if queue:
                self._waiting.move_to_end(client)  # this client's next frame goes behind everyone else's
            else:
                del self._waiting[client]
            if future.cancelled():
                self.budget.admitted -= 1
                continue
            self.running += 1
            future.set_result(None)
