"""`splitrt channel`: a user-space TCP proxy that shapes the edge's uplink to a trace.

The kernel here has no netem, so shaping happens in user space: bytes from
the edge are cut into packets, each packet leaves when the trace's capacity
(shared by every connection, as one radio link is) has carried it, plus a
one-way delay; answers from the server only get the delay.  Outages either
stall the link (zero capacity: bytes wait, as on a dead radio) or, in
``drop`` mode, also reset every connection and refuse new ones until the
outage ends, as a lost bearer does.  gRPC over HTTP/2 passes through
unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from .traces import Link, Trace

log = logging.getLogger("splitrt.channel")
PACKET = 1500
READ_SIZE = 64 * 1024


@dataclass
class Outage:
    start_s: float
    duration_s: float

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.start_s + self.duration_s


@dataclass
class ProxyStats:
    uplink_bytes: int = 0
    downlink_bytes: int = 0
    connections: int = 0
    refused: int = 0
    reset: int = 0
    first_byte_s: float | None = None
    last_byte_s: float | None = None
    outages: list[Outage] = field(default_factory=list)


class ShapingProxy:
    def __init__(
        self,
        trace: Trace,
        upstream: tuple[str, int],
        delay_ms: float = 20.0,
        outages: list[Outage] | None = None,
        outage_mode: str = "stall",
        trace_offset_s: float = 0.0,
    ) -> None:
        if outage_mode not in ("stall", "drop"):
            raise ValueError(f"outage mode must be 'stall' or 'drop', not {outage_mode!r}")
        self.outages = outages or []
        if self.outages:
            trace = trace.with_outages([(o.start_s + trace_offset_s, o.duration_s) for o in self.outages])
        self.link = Link(trace, 0.0, start_s=trace_offset_s)
        self.upstream = upstream
        self.delay_s = delay_ms / 1e3
        self.outage_mode = outage_mode
        self.stats = ProxyStats(outages=self.outages)
        self._t0: float | None = None  # the trace starts with the first connection
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._watch: asyncio.Task | None = None

    def now(self) -> float:
        """Seconds into the trace (0 until the first connection, so an experiment starts at its start)."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def in_outage(self, t: float | None = None) -> bool:
        t = self.now() if t is None else t
        return any(o.active(t) for o in self.outages)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, host, port)
        if self.outage_mode == "drop" and self.outages:
            self._watch = asyncio.create_task(self._drop_during_outages())
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()
        if self._server:
            self._server.close()
        for pair in list(self._connections):
            for writer in pair:
                writer.close()
        if self._server:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._t0 is None:
            self._t0 = time.monotonic()
        if self.outage_mode == "drop" and self.in_outage():
            self.stats.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            log.warning("upstream %s:%d unreachable: %s", *self.upstream, exc)
            writer.close()
            return
        self.stats.connections += 1
        pair = (writer, up_writer)
        self._connections.add(pair)
        try:
            await asyncio.gather(self._uplink(reader, up_writer), self._downlink(up_reader, writer))
        finally:
            self._connections.discard(pair)
            for w in pair:
                w.close()

    async def _uplink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Edge -> server: every packet waits for the trace's capacity, then the delay."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._deliver(queue, writer))
        try:
            while data := await reader.read(READ_SIZE):
                now = self.now()
                for i in range(0, len(data), PACKET):
                    packet = data[i : i + PACKET]
                    queue.put_nowait((self.link.send(now, len(packet)) + self.delay_s, packet))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await sender

    async def _deliver(self, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        try:
            while (item := await queue.get()) is not None:
                due, packet = item
                wait = due - self.now()
                if wait > 0:
                    await asyncio.sleep(wait)
                chunks = [packet]
                while not queue.empty():  # coalesce packets already due
                    peek = queue._queue[0]  # noqa: SLF001 - asyncio.Queue has no peek
                    if peek is None or peek[0] > self.now():
                        break
                    chunks.append(queue.get_nowait()[1])
                payload = b"".join(chunks)
                self._count_up(len(payload))
                writer.write(payload)
                await writer.drain()
            writer.write_eof() if writer.can_write_eof() else None
        except (ConnectionError, OSError):
            pass

    def _count_up(self, n: int) -> None:
        now = self.now()
        if self.stats.first_byte_s is None:
            self.stats.first_byte_s = now
        self.stats.last_byte_s = now
        self.stats.uplink_bytes += n

    async def _downlink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Server -> edge: only the delay (answers are small)."""
        try:
            while data := await reader.read(READ_SIZE):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.stats.downlink_bytes += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _drop_during_outages(self) -> None:
        while self._t0 is None:
            await asyncio.sleep(0.05)
        for outage in sorted(self.outages, key=lambda o: o.start_s):
            await asyncio.sleep(max(0.0, outage.start_s - self.now()))
            log.info("outage: resetting %d connections for %.1fs", len(self._connections), outage.duration_s)
            for pair in list(self._connections):
                self.stats.reset += 1
                for writer in pair:
                    with contextlib.suppress(Exception):
                        writer.transport.abort()


def parse_outage(text: str) -> Outage:
    """``START:DURATION`` in seconds, e.g. ``10:5``."""
    try:
        start, duration = (float(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"outage {text!r}: expected START:DURATION in seconds, e.g. 10:5") from None
    if start < 0 or duration <= 0:
        raise ValueError(f"outage {text!r}: start must be >= 0 and duration > 0")
    return Outage(start, duration)
