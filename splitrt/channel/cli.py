"""`splitrt channel`: run the shaping proxy until interrupted."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from .proxy import ShapingProxy, parse_outage
from .traces import Trace, open_trace


def split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"address {text!r}: expected HOST:PORT")
    return host, int(port)


async def serve(proxy: ShapingProxy, host: str, port: int) -> None:
    bound = await proxy.start(host, port)
    print(f"splitrt channel: {host}:{bound} -> {proxy.upstream[0]}:{proxy.upstream[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.stop()
    s = proxy.stats
    print(
        f"splitrt channel: {s.uplink_bytes} B up, {s.downlink_bytes} B down, {s.connections} connections, "
        f"{s.reset} reset, {s.refused} refused",
        flush=True,
    )


def main(args: Any) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (args.trace is None) == (args.mbps is None):
        raise SystemExit("give exactly one of --trace FILE or --mbps RATE")
    trace = open_trace(args.trace) if args.trace else Trace.constant(args.mbps, 3600)
    outages = [parse_outage(o) for o in args.outage]
    proxy = ShapingProxy(
        trace,
        split_address(args.upstream),
        delay_ms=args.delay_ms,
        outages=outages,
        outage_mode=args.outage_mode,
        trace_offset_s=args.trace_offset,
    )
    host, port = split_address(args.listen)
    asyncio.run(serve(proxy, host, port))
    return 0
