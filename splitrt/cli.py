"""`splitrt`: the demo, benchmarks and model/codec listings."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEMO_MODEL = "shapes_fcos"
DEMO_SPLIT = "features.6/eb2"
#: Profiles measured on this project's 2-core x86 machine, one per shipped model.
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
SHIPPED_PROFILE = "the shipped shapes_fcos profile"
DEMO_CODEC = "entropy"


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

    bench = commands.add_parser("bench", help="benchmarks (tables + JSON)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    wire = benches.add_parser("wire", help="bytes per frame for every split point x codec, vs JPEG q90 of the input")
    wire.add_argument("--model", default="fasterrcnn_mobilenet_v3_large_320_fpn", help="model (default: %(default)s)")
    wire.add_argument("--weights", help="safetensors weights (default: untrained)")
    wire.add_argument("--source", default="synthetic:8", help="frame source (default: %(default)s)")
    wire.add_argument("--frames", type=int, default=8, help="frames to average over (default: %(default)s)")
    wire.add_argument("--out", default="runs/bench-wire.json", help="JSON output (default: %(default)s)")

    train = commands.add_parser("train", help="train the demo detector and its bottlenecks (resumable)")
    trainers = train.add_subparsers(dest="trainer", required=True, metavar="WHAT")
    teacher = trainers.add_parser("teacher", help="train the shapes_fcos teacher from scratch on the synthetic set")
    teacher.add_argument(
        "--out", default="runs/teacher", help="checkpoint folder; resumes from it (default: %(default)s)"
    )
    teacher.add_argument("--steps", type=int, default=8000, help="optimiser steps (default: %(default)s)")
    teacher.add_argument("--batch-size", type=int, default=8, help="images per step (default: %(default)s)")
    teacher.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    teacher.add_argument("--train-count", type=int, default=6000, help="training images (default: %(default)s)")

    bottleneck = trainers.add_parser("bottleneck", help="distil the bottleneck branches of shapes_fcos from a teacher")
    bottleneck.add_argument("--teacher", default="runs/teacher/teacher.safetensors", help="teacher weights")
    bottleneck.add_argument("--out", default="runs/bottleneck", help="output folder (default: %(default)s)")
    bottleneck.add_argument("--split", action="append", help="branch to train, e.g. features.6/eb2 (default: all)")
    bottleneck.add_argument("--steps", type=int, default=1500, help="steps per branch (default: %(default)s)")
    bottleneck.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    bottleneck.add_argument(
        "--finetune-steps", type=int, default=0, help="second stage on the detection loss, steps per branch"
    )

    slim = trainers.add_parser("slimmable", help="distil the slimmable bottleneck (sandwich rule, entropy-coded)")
    slim.add_argument("--teacher", default="runs/teacher/teacher.safetensors", help="teacher weights")
    slim.add_argument("--out", default="runs/bottleneck", help="output folder (default: %(default)s)")
    slim.add_argument("--steps", type=int, default=1500, help="steps (default: %(default)s)")
    slim.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    slim.add_argument("--finetune-steps", type=int, default=0, help="second stage on the detection loss")
    prefilter = trainers.add_parser("prefilter", help="train the prefilter and calibrate its threshold on val")
    prefilter.add_argument(
        "--model", default="runs/bottleneck/shapes_fcos.safetensors", help="model weights to extend (rewritten)"
    )
    prefilter.add_argument("--steps", type=int, default=3000, help="steps (default: %(default)s)")
    prefilter.add_argument("--train-count", type=int, default=12000, help="training images (default: %(default)s)")
    prefilter.add_argument("--recall", type=float, default=0.99, help="recall of frames with objects to keep")
    early_exit = trainers.add_parser(
        "exit", help="train the early-exit detector on features.6 (the device's own result for hedged frames)"
    )
    early_exit.add_argument(
        "--model", default="runs/bottleneck/shapes_fcos.safetensors", help="model weights to extend (rewritten)"
    )
    early_exit.add_argument("--steps", type=int, default=5000, help="steps (default: %(default)s)")
    early_exit.add_argument("--batch-size", type=int, default=32, help="images per step (default: %(default)s)")
    early_exit.add_argument("--train-count", type=int, default=6000, help="training images (default: %(default)s)")

    commands.add_parser("models", help="list models and their split points")
    commands.add_parser("codecs", help="list codecs")

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

    fuzz = benches.add_parser(
        "fuzz", help="coverage-guided fuzzing (atheris) of every decoder, each in a subprocess; crashes kept"
    )
    fuzz.add_argument("--minutes", type=float, default=5.0, help="total time, split over the targets (default: 5)")
    fuzz.add_argument("--target", action="append", help="fuzz only this target (repeatable; default: all)")
    fuzz.add_argument("--out", default="runs/bench-fuzz.json", help="JSON output (default: %(default)s)")
    switch = benches.add_parser("switch", help="cost of a slimmable width switch vs reloading a fixed bottleneck")
    switch.add_argument("--repeats", type=int, default=30, help="measurements per figure (default: %(default)s)")
    switch.add_argument("--out", default="runs/bench-switch.json", help="JSON output (default: %(default)s)")
    pre = benches.add_parser("prefilter", help="recall, frames/bytes not sent and mAP change of the prefilter")
    pre.add_argument("--images", type=int, default=400, help="test images (default: %(default)s)")
    pre.add_argument("--split", default=DEMO_SPLIT, help="split (default: %(default)s)")
    pre.add_argument("--codec", default=DEMO_CODEC, help="codec (default: %(default)s)")
    pre.add_argument("--threshold", type=float, help="score threshold (default: the calibrated one)")
    pre.add_argument("--out", default="runs/bench-prefilter.json", help="JSON output (default: %(default)s)")

    rate = benches.add_parser("rate", help="mAP vs bytes/frame of shapes_fcos: JPEG, WebP, teacher splits, bottlenecks")
    rate.add_argument("--weights", help="shapes_fcos weights (default: the shipped ones)")
    rate.add_argument("--images", type=int, default=300, help="test images (default: %(default)s)")
    rate.add_argument("--out", default="runs/bench-rate.json", help="JSON output; the plot goes next to it as .png")
    profile = commands.add_parser(
        "profile", help="measure every configuration (head time, bytes, tail time, mAP) into a profile JSON"
    )
    profile.add_argument("--model", default=DEMO_MODEL, help="model (default: %(default)s)")
    profile.add_argument("--images", type=int, default=100, help="validation images (default: %(default)s)")
    profile.add_argument("--out", default="runs/profile.json", help="profile JSON (default: %(default)s)")

    simulate = commands.add_parser(
        "simulate", help="replay a bandwidth trace in virtual time: adaptive vs static vs oracle, table + plots"
    )
    simulate.add_argument(
        "--trace",
        action="append",
        required=True,
        help="Mahimahi file, time_s,mbps CSV, or constant:MBPS[:SECONDS] (repeatable)",
    )
    simulate.add_argument(
        "--gilbert-elliott", metavar="PGB:PBG[:BAD]", help="overlay bursty outages (transitions per 100 ms)"
    )
    simulate.add_argument(
        "--profile",
        action="append",
        help="profile JSON from `splitrt profile`, or a CSV of measurements (columns: configuration, head_ms, "
        "tail_ms, bytes, map; see docs/DESIGN.md); repeatable with --grid (default: " + SHIPPED_PROFILE + ")",
    )
    simulate.add_argument("--deadline-ms", type=float, default=130.0, help="per-frame deadline (default: %(default)s)")
    simulate.add_argument("--fps", type=float, default=5.0, help="frame rate (default: %(default)s)")
    simulate.add_argument("--seconds", type=float, help="simulate this long (default: the whole trace)")
    simulate.add_argument("--rtt-ms", type=float, default=40.0, help="base round-trip time (default: %(default)s)")
    simulate.add_argument(
        "--edge-slowdown",
        type=float,
        default=8.0,
        help="how many times slower the edge device is than the machine that measured the profile "
        "(default: %(default)s, roughly a Raspberry Pi 4 against one x86 server core)",
    )
    simulate.add_argument("--contention", help="device slowdown windows START:END:FACTOR[,...] in seconds")
    simulate.add_argument(
        "--without",
        action="append",
        metavar="CONFIG",
        help="leave this configuration out of the profile, e.g. exit@features.6 (repeatable; for ablations)",
    )
    simulate.add_argument("--seed", type=int, default=0, help="seed of the per-frame byte draws (default: 0)")
    simulate.add_argument("--out", default="runs/simulate", help="folder for JSON and PNGs (default: %(default)s)")
    grid = simulate.add_argument_group("grid (--grid): every combination, one table and a heat map")
    grid.add_argument("--grid", action="store_true", help="run the grid instead of one scenario per trace")
    grid.add_argument(
        "--deadlines", default="100,130,250", help="deadlines in ms, comma-separated (default: %(default)s)"
    )
    grid.add_argument("--slowdowns", default="1,4,16", help="edge slowdowns, comma-separated (default: %(default)s)")
    grid.add_argument(
        "--ablations",
        default="full,no-exit,no-hedge",
        help="full, no-exit (no early exit), no-hedge (nothing hedged), no-local (no local configuration); "
        "comma-separated (default: %(default)s)",
    )
    simulate.add_argument(
        "--live-seconds",
        type=float,
        default=0.0,
        help="also run server + proxy + adaptive edge for this long on the first trace and compare hit rates",
    )

    export = commands.add_parser("export", help="export parts of a model for other runtimes")
    exports = export.add_subparsers(dest="export", required=True, metavar="WHAT")
    head = exports.add_parser("head", help="the edge's head as TorchScript (for libtorch devices)")
    head.add_argument("--model", default=DEMO_MODEL, help="model (default: %(default)s)")
    head.add_argument("--weights", help="safetensors weights (default: the shipped ones)")
    head.add_argument("--split", default=DEMO_SPLIT, help="split point (default: %(default)s)")
    head.add_argument("--width", type=float, help="width of a slimmable split (default: full)")
    head.add_argument("--out", default="runs/head.pt", help="TorchScript file (default: %(default)s)")

    triton = exports.add_parser("triton", help="a Triton model repository serving the tails (Python backend)")
    triton.add_argument("--model", action="append", default=[], metavar="[NAME=]ARCH", help="model (repeatable)")
    triton.add_argument("--config", help="TOML file with [[models]] tables, as for splitrt-server")
    triton.add_argument("--out", default="runs/triton-repository", help="repository folder (default: %(default)s)")
    triton.add_argument("--max-batch", type=int, default=16, help="Triton dynamic batching (default: %(default)s)")
    triton.add_argument("--delay-us", type=int, default=5000, help="max queue delay, µs (default: %(default)s)")
    triton.add_argument("--instances", type=int, default=1, help="model instances (default: %(default)s)")
    triton.add_argument(
        "--pytriton", help="site-packages holding nvidia-pytriton: also write its backend folder and print the command"
    )

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
    return parser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo(args: argparse.Namespace) -> int:
    port = free_port()
    source = f"shapes-video:{args.frames}" if args.model == DEMO_MODEL else f"synthetic:{args.frames}"
    print(f"== splitrt demo: splitrt-server on 127.0.0.1:{port}, splitrt-edge streaming {source}")
    print(f"   model {args.model}, split {args.split}, codec {args.codec}")
    server_cmd = [sys.executable, "-m", "splitrt.server.app", "--port", str(port), "--model", args.model]
    server = subprocess.Popen([*server_cmd, "--log-level", "WARNING"])
    edge_cmd = [
        sys.executable,
        "-m",
        "splitrt.edge.cli",
        source,
        "--server",
        f"127.0.0.1:{port}",
        "--model",
        args.model,
    ]
    edge_cmd += ["--split", args.split, "--codec", args.codec, "--out", args.out]
    try:
        edge = subprocess.run(edge_cmd, check=False)
    finally:
        server.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            server_code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server_code = server.wait()
    verdict = "stopped cleanly" if server_code == 0 else "FAILED to stop cleanly"
    print(
        f"== server {verdict} {time.monotonic() - started:.1f}s after SIGTERM (exit {server_code}); "
        f"edge exit {edge.returncode}"
    )
    if edge.returncode == 0 and args.model == DEMO_MODEL:
        from .bench.video import report

        print(report(Path(args.out), args.frames))
    return edge.returncode or server_code


def export_triton(args: argparse.Namespace) -> int:
    from .models.spec import load_config, parse_model_flag
    from .server import triton

    specs = load_config(args.config) if args.config else []
    specs += [parse_model_flag(name) for name in args.model] or ([] if specs else [parse_model_flag(DEMO_MODEL)])
    out = triton.write_repository(specs, args.out, args.instances, args.max_batch, args.delay_us)
    print(f"Triton model repository: {out} ({', '.join(s.name for s in specs)})")
    site = triton.find_tritonserver(args.pytriton)
    if site is None:
        print("nvidia-pytriton not found: install it (pip install nvidia-pytriton, numpy<2) and pass --pytriton")
        return 0
    backends = triton.backend_directory(site, Path(args.out).with_name(Path(args.out).name + "-backends"))
    env = triton.triton_environment(site)
    command = " ".join(triton.tritonserver_command(site, out, backends, 8001))
    print(f"run it with:\n  LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']} {command}")
    return 0


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
    if args.command == "profile":
        from .adapt.cli import profile_main

        return profile_main(args)
    if args.command == "simulate":
        from .adapt.experiment import main as simulate_main

        return simulate_main(args)
    if args.command == "export" and args.export == "head":
        from .data.datasets import ShapesDetection
        from .edge.export import export_head
        from .models.spec import parse_model_flag

        model = parse_model_flag(args.model, args.weights).build()
        example = ShapesDetection("val", 1)[0][0]
        path = export_head(model, args.split, example, args.out, args.width)
        print(f"head of {args.model} at {args.split} -> {path} (input: model.preprocess(image)[0])")
        return 0
    if args.command == "export" and args.export == "triton":
        return export_triton(args)
    if args.command == "channel":
        from .channel.cli import main as channel_main

        return channel_main(args)
    if args.command == "bench" and args.bench == "wire":
        from .bench import wire
        from .models.spec import parse_model_flag

        return wire.main(parse_model_flag(args.model, args.weights), args.source, args.frames, Path(args.out))
    if args.command == "train" and args.trainer == "teacher":
        from .train.teacher import train_teacher

        metrics = train_teacher(
            Path(args.out), steps=args.steps, batch_size=args.batch_size, lr=args.lr, train_count=args.train_count
        )
        print(f"teacher val mAP@[.5:.95] {metrics['map']:.1f}  mAP@.5 {metrics['map50']:.1f}  -> {args.out}")
        return 0
    if args.command == "train" and args.trainer == "bottleneck":
        from .train.bottleneck import train_bottlenecks

        path = train_bottlenecks(
            Path(args.teacher),
            Path(args.out),
            args.split,
            args.steps,
            args.batch_size,
            finetune_steps=args.finetune_steps,
        )
        print(f"bottlenecks written to {path}")
        return 0
    if args.command == "train" and args.trainer == "slimmable":
        from .train.bottleneck import train_bottlenecks

        path = train_bottlenecks(
            Path(args.teacher),
            Path(args.out),
            ["features.6/slim"],
            args.steps,
            args.batch_size,
            finetune_steps=args.finetune_steps,
        )
        print(f"slimmable bottleneck written to {path}")
        return 0
    if args.command == "train" and args.trainer == "prefilter":
        from .models import save_weights
        from .train.checkpoint import model_to_extend
        from .train.prefilter import train_prefilter

        weights = Path(args.model)
        model = model_to_extend(weights, "prefilter.")  # the prefilter is trained afresh
        metrics = train_prefilter(
            model,
            steps=args.steps,
            train_count=args.train_count,
            recall=args.recall,
            log_path=weights.parent / "prefilter-log.jsonl",
        )
        save_weights(model, weights)
        print(
            f"prefilter threshold {metrics['threshold']:.4f}: val recall {metrics['val_recall']:.3f}, "
            f"empty frames filtered {metrics['val_empty_filtered']:.3f} -> {weights}"
        )
        return 0
    if args.command == "train" and args.trainer == "exit":
        from .models import save_weights
        from .train.checkpoint import model_to_extend
        from .train.early_exit import train_exit

        weights = Path(args.model)
        model = model_to_extend(weights, "early_exit.")  # the exit is trained afresh
        metrics = train_exit(
            model,
            steps=args.steps,
            batch_size=args.batch_size,
            train_count=args.train_count,
            log_path=weights.parent / "exit-log.jsonl",
        )
        save_weights(model, weights)
        print(f"early exit: val mAP {metrics['map']:.1f} (mAP50 {metrics['map50']:.1f}) -> {weights}")
        return 0
    if args.command == "bench" and args.bench == "load":
        from .bench import load

        levels = [int(n) for n in args.clients.split(",")]
        return load.main(
            levels,
            args.seconds,
            args.model,
            args.split,
            args.codec,
            Path(args.out),
            args.max_batch,
            args.batch_delay_ms,
        )
    if args.command == "bench" and args.bench == "fuzz":
        from .bench import fuzz

        results = fuzz.run(args.minutes, args.out, args.target)
        return 1 if any(r["exit_code"] != 0 or r["crashes"] for r in results) else 0
    if args.command == "bench" and args.bench == "switch":
        from .bench import switch

        return switch.main(args.repeats, Path(args.out))
    if args.command == "bench" and args.bench == "prefilter":
        from .bench import prefilter

        return prefilter.main(args.images, args.split, args.codec, args.threshold, Path(args.out))
    if args.command == "bench" and args.bench == "rate":
        from .bench import rate

        return rate.main(args.weights, args.images, Path(args.out))
    if args.command == "models":
        return list_models()
    if args.command == "codecs":
        return list_codecs()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
