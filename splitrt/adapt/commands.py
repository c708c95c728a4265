"""`splitrt profile` and `splitrt simulate`: their flags; the work is imported only to run it."""

from __future__ import annotations

import argparse

from ..defaults import DEMO_MODEL, SHIPPED_PROFILE


def register(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser(
        "profile", help="measure every configuration (head time, bytes, tail time, mAP) into a profile JSON"
    )
    profile.add_argument("--model", default=DEMO_MODEL, help="model (default: %(default)s)")
    profile.add_argument("--images", type=int, default=100, help="validation images (default: %(default)s)")
    profile.add_argument("--out", default="runs/profile.json", help="profile JSON (default: %(default)s)")
    profile.add_argument(
        "--threads",
        type=int,
        help="torch threads, as the edge will run (default: the adaptive edge's default, every core)",
    )

    profile.set_defaults(handler=_profile)

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
    grid.add_argument(
        "--jobs", type=int, help="cells simulated at once, one process each (default: the cores available)"
    )
    simulate.add_argument(
        "--live-seconds",
        type=float,
        default=0.0,
        help="also run server + proxy + adaptive edge for this long on the first trace and compare hit rates",
    )

    simulate.set_defaults(handler=_simulate)


def _profile(args: argparse.Namespace) -> int:
    import torch

    from ..data.datasets import ShapesDetection
    from ..models import build_model
    from ..threads import apply_threads, edge_threads
    from .profile import Profile, default_configurations, device_description, measure

    # Measured with the threads of the adaptive edge (one frame at a time); it re-measures the heads
    # at start-up on the real device.
    threads = apply_threads(args.threads, edge_threads(in_flight=1))
    print(f"profiling with {threads} torch thread(s)")
    model = build_model(args.model)
    if not getattr(model, "trained", False):
        raise SystemExit(f"profile needs trained weights for {args.model!r} (mAP of random weights means nothing)")
    dataset = ShapesDetection("val", args.images)
    configs = default_configurations(model)
    with torch.inference_mode():
        entries = measure(model, configs, dataset)
    profile = Profile(args.model, model.fingerprint(), device_description(), args.images, entries)
    profile.save(args.out)
    print(f"{'configuration':34s} {'head ms':>8s} {'bytes':>8s} {'p95 bytes':>9s} {'tail ms':>8s} {'mAP':>6s}")
    for e in entries:
        print(f"{e.name:34s} {e.head_ms:8.2f} {e.bytes_mean:8.0f} {e.bytes_p95:9.0f} {e.tail_ms:8.2f} {e.map:6.1f}")
    print(f"written: {args.out}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from .experiment import main

    return main(args)
