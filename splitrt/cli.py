"""`splitrt`: the demo, listings, and every package's own subcommands (bench, train, profile, ...).

Each package registers its subcommands (``register(commands)`` in its ``commands`` module) and
imports its heavy parts only when one of them runs, so ``splitrt --help`` and the listings are fast.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .adapt import commands as adapt_commands
from .bench import commands as bench_commands
from .channel import commands as channel_commands
from .data import commands as data_commands
from .defaults import DEMO_CODEC, DEMO_MODEL, DEMO_SPLIT
from .edge import commands as edge_commands
from .models import commands as model_commands
from .server import commands as server_commands
from .train import commands as train_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitrt", description="splitrt: edge-cloud split inference runtime.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="start a server on loopback, stream a synthetic video through a split detector"
    )
    demo.add_argument("--frames", type=int, default=24, help="frames of the shapes video (default: %(default)s)")
    demo.add_argument("--split", default=DEMO_SPLIT, help="split point (default: %(default)s)")
    demo.add_argument("--codec", default=DEMO_CODEC, help="codec (default: %(default)s)")
    demo.add_argument("--model", default=DEMO_MODEL, help="model (default: %(default)s)")
    demo.add_argument("--out", default="runs/demo.jsonl", help="JSON lines output (default: %(default)s)")

    demo.set_defaults(handler=run_demo)
    commands.add_parser("models", help="list models, their tasks and split points").set_defaults(handler=list_models)
    commands.add_parser("codecs", help="list codecs and what they carry").set_defaults(handler=list_codecs)

    bench_commands.register(commands)
    train_commands.register(commands)
    adapt_commands.register(commands)
    export = commands.add_parser("export", help="export parts of a model for other runtimes")
    exports = export.add_subparsers(dest="export", required=True, metavar="WHAT")
    edge_commands.register_export(exports)
    server_commands.register_export(exports)
    channel_commands.register(commands)
    model_commands.register(commands)
    data_commands.register(commands)
    return parser


def run_demo(args: argparse.Namespace) -> int:
    from .launch import ServerProcess

    source = f"shapes-video:{args.frames}" if args.model == DEMO_MODEL else f"synthetic:{args.frames}"
    server = ServerProcess(["--model", args.model, "--log-level", "WARNING"])
    print(f"== splitrt demo: splitrt-server on {server.address}, splitrt-edge streaming {source}")
    print(f"   model {args.model}, split {args.split}, codec {args.codec}")
    edge_cmd = [sys.executable, "-m", "splitrt.edge.cli", source, "--server", server.address, "--model", args.model]
    edge_cmd += ["--split", args.split, "--codec", args.codec, "--out", args.out]
    try:
        edge = subprocess.run(edge_cmd, check=False)
    finally:
        started = time.monotonic()
        server_code = server.stop()
    verdict = "stopped cleanly" if server_code == 0 else "FAILED to stop cleanly"
    print(
        f"== server {verdict} {time.monotonic() - started:.1f}s after SIGTERM (exit {server_code}); "
        f"edge exit {edge.returncode}"
    )
    if edge.returncode == 0 and args.model == DEMO_MODEL:
        from .bench.video import report

        print(report(Path(args.out), args.frames))
    return edge.returncode or server_code


def list_models(args: argparse.Namespace) -> int:
    from .catalog import MODELS

    for name, entry in sorted(MODELS.items()):
        print(f"{name:40s} {entry.task:15s} splits: {', '.join(entry.splits)}")
    return 0


def list_codecs(args: argparse.Namespace) -> int:
    from .catalog import CODECS

    for name, entry in CODECS.items():
        print(f"{name:22s} {entry.kind:9s} {entry.summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
