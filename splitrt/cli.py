"""`splitrt`: the demo, benchmarks and model/codec listings."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEMO_MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitrt", description="splitrt: edge-cloud split inference runtime.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="start a server on loopback, stream a synthetic video through a split detector"
    )
    demo.add_argument("--frames", type=int, default=24, help="frames of synthetic video (default: %(default)s)")
    demo.add_argument("--split", default="features.3", help="split point (default: %(default)s)")
    demo.add_argument("--codec", default="int8-zstd", help="codec (default: %(default)s)")
    demo.add_argument("--model", default=DEMO_MODEL, help="model (default: %(default)s)")
    demo.add_argument("--out", default="runs/demo.jsonl", help="JSON lines output (default: %(default)s)")

    bench = commands.add_parser("bench", help="benchmarks (tables + JSON)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    wire = benches.add_parser("wire", help="bytes per frame for every split point x codec, vs JPEG q90 of the input")
    wire.add_argument("--model", default=DEMO_MODEL, help="model (default: %(default)s)")
    wire.add_argument("--weights", help="safetensors weights (default: untrained)")
    wire.add_argument("--source", default="synthetic:8", help="frame source (default: %(default)s)")
    wire.add_argument("--frames", type=int, default=8, help="frames to average over (default: %(default)s)")
    wire.add_argument("--out", default="runs/bench-wire.json", help="JSON output (default: %(default)s)")

    commands.add_parser("models", help="list models and their split points")
    commands.add_parser("codecs", help="list codecs")
    return parser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo(args: argparse.Namespace) -> int:
    port = free_port()
    print(f"== splitrt demo: splitrt-server on 127.0.0.1:{port}, splitrt-edge streaming {args.frames} synthetic frames")
    print(f"   model {args.model}, split {args.split}, codec {args.codec}")
    print("   (untrained weights: no trained model ships yet, so timings and bytes are real but detections are not)")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "splitrt.server.app",
            "--port",
            str(port),
            "--model",
            args.model,
            "--log-level",
            "WARNING",
        ]
    )
    try:
        edge = subprocess.run(
            [
                sys.executable,
                "-m",
                "splitrt.edge.cli",
                f"synthetic:{args.frames}",
                "--server",
                f"127.0.0.1:{port}",
                "--model",
                args.model,
                "--split",
                args.split,
                "--codec",
                args.codec,
                "--out",
                args.out,
                "--max-frames",
                str(args.frames),
            ],
            check=False,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            server_code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server_code = server.wait()
    print(
        f"== server {'stopped cleanly' if server_code == 0 else 'FAILED to stop cleanly'} "
        f"{time.monotonic() - started:.1f}s after SIGTERM (exit {server_code}); edge exit {edge.returncode}"
    )
    return edge.returncode or server_code


def list_models() -> int:
    from .models import build_model
    from .models import list_models as names

    for name in names():
        model = build_model(name)
        print(f"{name:40s} {model.task:15s} splits: {', '.join(model.split_points)}")
    return 0


def list_codecs() -> int:
    from .codecs import get_codec
    from .codecs import list_codecs as names

    for name in names():
        print(f"{name:12s} {get_codec(name).kind}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return demo(args)
    if args.command == "bench" and args.bench == "wire":
        from .bench import wire
        from .models.spec import parse_model_flag

        return wire.main(parse_model_flag(args.model, args.weights), args.source, args.frames, Path(args.out))
    if args.command == "models":
        return list_models()
    if args.command == "codecs":
        return list_codecs()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
