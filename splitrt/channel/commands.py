"""`splitrt channel`: the shaping proxy's flags; the proxy is imported only to run it."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    channel = commands.add_parser(
        "channel", help="shaping TCP proxy: deliver the edge's bytes to the server at a trace's rate"
    )
    channel.add_argument("--trace", help="Mahimahi or CSV trace, or constant:MBPS (or use --mbps)")
    channel.add_argument("--mbps", type=float, help="constant rate instead of a trace")
    channel.add_argument(
        "--listen", default="127.0.0.1:9000", help="address the edge connects to (default: %(default)s)"
    )
    channel.add_argument("--upstream", required=True, help="the splitrt-server address, HOST:PORT")
    channel.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay each way (default: %(default)s)")
    channel.add_argument("--outage", action="append", default=[], help="START:DURATION seconds of no capacity")
    channel.add_argument(
        "--outage-mode", choices=["stall", "drop"], default="stall", help="stall bytes or also reset connections"
    )
    channel.add_argument("--trace-offset", type=float, default=0.0, help="start this many seconds into the trace")
    channel.set_defaults(handler=_channel)


def _channel(args: argparse.Namespace) -> int:
    from .cli import main

    return main(args)
