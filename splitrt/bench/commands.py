"""`splitrt bench ...`: each benchmark's flags, registered here; its module is imported only to run it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import DEMO_CODEC, DEMO_MODEL, DEMO_SPLIT
from . import overhead, perf_analyzer


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks (tables + JSON)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")

    wire = benches.add_parser("wire", help="bytes per frame for every split point x codec, vs JPEG q90 of the input")
    wire.add_argument("--model", default="fasterrcnn_mobilenet_v3_large_320_fpn", help="model (default: %(default)s)")
    wire.add_argument("--weights", help="safetensors weights (default: untrained)")
    wire.add_argument("--source", default="synthetic:8", help="frame source (default: %(default)s)")
    wire.add_argument("--frames", type=int, default=8, help="frames to average over (default: %(default)s)")
    wire.add_argument("--out", default="runs/bench-wire.json", help="JSON output (default: %(default)s)")
    wire.set_defaults(handler=_wire)

    load = benches.add_parser("load", help="N concurrent edge processes against one server: throughput, p50/p99, RSS")
    load.add_argument("--clients", default="1,4,16,32", help="comma-separated client counts (default: %(default)s)")
    load.add_argument("--seconds", type=float, default=10.0, help="measurement time per level (default: %(default)s)")
    load.add_argument("--model", default=DEMO_MODEL, help="model (default: %(default)s)")
    load.add_argument("--split", default=DEMO_SPLIT, help="split (default: %(default)s)")
    load.add_argument("--codec", default=DEMO_CODEC, help="codec (default: %(default)s)")
    load.add_argument("--out", default="runs/bench-load.json", help="JSON output (default: %(default)s)")
    load.add_argument(
        "--max-batch",
        type=int,
        default=1,
        help="also run a server batching up to N frames, side by side (default: off)",
    )
    load.add_argument("--batch-delay-ms", type=float, default=5.0, help="its batch delay (default: %(default)s)")
    load.add_argument(
        "--instances",
        default="1",
        help="comma-separated tail instance counts, one server each, side by side (default: %(default)s)",
    )
    load.set_defaults(handler=_load)

    fuzz = benches.add_parser(
        "fuzz", help="coverage-guided fuzzing (atheris) of every decoder, each in a subprocess; crashes kept"
    )
    fuzz.add_argument("--minutes", type=float, default=5.0, help="total time, split over the targets (default: 5)")
    fuzz.add_argument("--target", action="append", help="fuzz only this target (repeatable; default: all)")
    fuzz.add_argument("--out", default="runs/bench-fuzz.json", help="JSON output (default: %(default)s)")
    fuzz.set_defaults(handler=_fuzz)

    switch = benches.add_parser("switch", help="cost of a slimmable width switch vs reloading a fixed bottleneck")
    switch.add_argument("--repeats", type=int, default=30, help="measurements per figure (default: %(default)s)")
    switch.add_argument("--out", default="runs/bench-switch.json", help="JSON output (default: %(default)s)")
    switch.set_defaults(handler=_switch)

    pre = benches.add_parser("prefilter", help="recall, frames/bytes not sent and mAP change of the prefilter")
    pre.add_argument("--images", type=int, default=400, help="test images (default: %(default)s)")
    pre.add_argument("--split", default=DEMO_SPLIT, help="split (default: %(default)s)")
    pre.add_argument("--codec", default=DEMO_CODEC, help="codec (default: %(default)s)")
    pre.add_argument("--threshold", type=float, help="score threshold (default: the calibrated one)")
    pre.add_argument("--out", default="runs/bench-prefilter.json", help="JSON output (default: %(default)s)")
    pre.set_defaults(handler=_prefilter)

    rate = benches.add_parser("rate", help="mAP vs bytes/frame of shapes_fcos: JPEG, WebP, teacher splits, bottlenecks")
    rate.add_argument("--weights", help="shapes_fcos weights (default: the shipped ones)")
    rate.add_argument("--images", type=int, default=300, help="test images (default: %(default)s)")
    rate.add_argument("--out", default="runs/bench-rate.json", help="JSON output; the plot goes next to it as .png")
    rate.set_defaults(handler=_rate)

    overhead.add_parser(benches)
    perf_analyzer.add_parser(benches)



def _wire(args: argparse.Namespace) -> int:
    from ..models.spec import parse_model_flag
    from . import wire

    return wire.main(parse_model_flag(args.model, args.weights), args.source, args.frames, Path(args.out))


def _load(args: argparse.Namespace) -> int:
    from . import load

    levels = [int(n) for n in args.clients.split(",")]
    instances = [int(n) for n in args.instances.split(",")]
    return load.main(
        levels,
        args.seconds,
        args.model,
        args.split,
        args.codec,
        Path(args.out),
        args.max_batch,
        args.batch_delay_ms,
        instances,
    )


def _fuzz(args: argparse.Namespace) -> int:
    from . import fuzz

    results = fuzz.run(args.minutes, args.out, args.target)
    return 1 if any(r["exit_code"] != 0 or r["crashes"] for r in results) else 0


def _switch(args: argparse.Namespace) -> int:
    from . import switch

    return switch.main(args.repeats, Path(args.out))


def _prefilter(args: argparse.Namespace) -> int:
    from . import prefilter

    return prefilter.main(args.images, args.split, args.codec, args.threshold, Path(args.out))


def _rate(args: argparse.Namespace) -> int:
    from . import rate

    return rate.main(args.weights, args.images, Path(args.out))
