"""`splitrt-edge`: read frames, run the head, stream to a server, write JSON lines."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..codecs import CodecError
from ..defaults import DEMO_MODEL
from ..logs import configure_logging
from ..models.base import SplitError
from ..models.spec import parse_model_flag, parse_options
from ..outputs import ResultsFile, progress_bar
from ..signals import Stopped, stop_on_signals
from ..threads import apply_threads, edge_threads
from . import report
from .client import SplitClient
from .connection import TOKEN_ENV, ConnectionOptions
from .sources import SourceError, open_source, paced

DEFAULT_MODEL = DEMO_MODEL  # the shipped, trained detector


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitrt-edge",
        description="Run the head of a split model on this device and stream features to a splitrt server.",
        epilog=(
            "Examples:\n"
            "  splitrt-edge shapes-video:100                    # shapes_fcos at features.6/eb2, entropy-coded\n"
            "  splitrt-edge video.mp4 --split input --codec jpeg:80 --out results.jsonl\n"
            "  splitrt-edge photos/ --codec local               # no network: run everything here"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", help="synthetic:N, shapes-video:N, an image file, a folder, a video file, or a camera index"
    )
    parser.add_argument("--server", default="127.0.0.1:8001", help="server address host:port (default: %(default)s)")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="[NAME=]ARCH", help="model, as served (default: %(default)s)"
    )
    parser.add_argument("--weights", help="safetensors weights; must match the server's (checked by fingerprint)")
    parser.add_argument(
        "--model-option", action="append", default=[], metavar="KEY=VALUE", help="model builder option (repeatable)"
    )
    parser.add_argument(
        "--split",
        help="split point (default: the model's entropy-coded bottleneck, features.6/eb2 for shapes_fcos; "
        "see `splitrt models`)",
    )
    parser.add_argument(
        "--codec",
        default="auto",
        help="codec: fp32, fp16, int8 (+ -zstd), jpeg[:Q], png, webp[:Q], raw, local; "
        "for bottleneck splits (X/bn, X/ebK): bottleneck-int8-zstd, entropy (default: auto, the split's own: "
        "entropy for X/ebK and X/slim, bottleneck-int8-zstd for X/bn, jpeg:90 for input, int8-zstd otherwise)",
    )
    parser.add_argument(
        "--out", default="runs/edge.jsonl", help="JSON lines output, one line per frame (default: %(default)s)"
    )
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument(
        "--fps", type=float, help="release frames at this rate, like a camera (default: as fast as possible)"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=4, help="frames awaiting an answer at once (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each frame's answer (default: %(default)s)"
    )
    parser.add_argument(
        "--wait-ready",
        type=float,
        default=60.0,
        help="seconds to wait for the server to be ready (default: %(default)s)",
    )
    parser.add_argument(
        "--on-failure",
        choices=["local", "drop"],
        default="local",
        help="frames the server cannot answer (after resends): run them here, or report them dropped "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-resends", type=int, default=2, help="resends of a frame after a broken stream (default: %(default)s)"
    )
    parser.add_argument(
        "--local-model",
        choices=["full", "exit"],
        default="full",
        help="what runs on this device for --codec local and for frames the server cannot answer: the whole "
        "model, or its early exit (cheaper, less accurate; shapes_fcos has one) (default: %(default)s)",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.0,
        help="leave out detections scoring under this (default: 0, every detection, as mAP needs)",
    )
    parser.add_argument("--width", type=float, help="latent width of a slimmable split, e.g. 0.5 (default: full)")
    parser.add_argument("--prefilter", action="store_true", help="do not send frames the prefilter finds empty")
    parser.add_argument(
        "--prefilter-threshold", type=float, help="prefilter score threshold (default: the calibrated one)"
    )
    adaptive = parser.add_argument_group("adaptive control (per-frame split point, width, or local)")
    adaptive.add_argument(
        "--controller",
        choices=["none", "static", "adaptive"],
        default="none",
        help="none: stream with --split/--codec; static: one profiled configuration with a deadline; "
        "adaptive: choose per frame from the profile and the measured link (default: %(default)s)",
    )
    adaptive.add_argument(
        "--profile",
        help="profile from `splitrt profile` or a CSV of measurements (default: the model's shipped profile, "
        "its head times re-measured here with --remeasure-s)",
    )
    adaptive.add_argument("--deadline-ms", type=float, default=250.0, help="per-frame deadline (default: %(default)s)")
    adaptive.add_argument(
        "--objective", choices=["accuracy", "latency"], default="accuracy", help="what to optimise (default: accuracy)"
    )
    adaptive.add_argument("--accuracy-floor", type=float, help="minimum profiled mAP for the latency objective")
    adaptive.add_argument(
        "--no-hedge",
        action="store_true",
        help="never run a local model while a frame is out (saves device work; late answers then miss)",
    )
    adaptive.add_argument("--static-config", help="configuration name for --controller static (see the profile)")
    adaptive.add_argument(
        "--emulate-slowdown",
        type=float,
        default=1.0,
        help="experiments: stretch on-device compute N times to emulate a weaker device (default: 1)",
    )
    adaptive.add_argument(
        "--remeasure-s",
        type=float,
        default=2.0,
        help="re-measure the profile's head times on this device for N seconds at start, and warn when they "
        "differ from the profile's by more than 1.5x; 0: trust the profile (default: %(default)s)"
    )
    security = parser.add_argument_group("security")
    security.add_argument("--tls-ca", help="PEM CA bundle to verify the server (enables TLS)")
    security.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    security.add_argument("--tls-key", help="PEM client key (mutual TLS)")
    security.add_argument("--auth-token-file", help=f"file holding the bearer token (or set ${TOKEN_ENV})")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads for the head and local models; 0 keeps torch's own default (default: the cores "
        "this process may use, halved when the server is on this machine and frames are pipelined)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-frame table, only the summary")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"], help="json: one object per line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        # The adaptive edge sends one frame at a time; a plain stream pipelines --max-in-flight frames.
        in_flight = 1 if args.controller != "none" else args.max_in_flight
        apply_threads(args.threads, edge_threads(args.server, in_flight))
    except ValueError as exc:
        print(f"splitrt-edge: --threads: {exc}", file=sys.stderr)
        return 2
    out = ResultsFile(args.out)
    try:
        out.open()
    except OSError as exc:
        print(f"splitrt-edge: cannot write results to {args.out}: {exc}", file=sys.stderr)
        return 2
    with stop_on_signals(), out:
        try:
            return _main(args, out)
        except Stopped as stop:  # before the first frame (loading the model, waiting for the server)
            print(f"splitrt-edge: stopped by {stop.signal_name} before the first frame", file=sys.stderr)
            return stop.exit_code
        finally:
            if not out.lines:
                kept = f"; {args.out} is left as it was" if Path(args.out).exists() else ""
                print(f"splitrt-edge: no results written{kept}", file=sys.stderr)


def _main(args: argparse.Namespace, out: ResultsFile) -> int:
    try:
        spec = parse_model_flag(args.model, args.weights, parse_options(args.model_option))
        frames = open_source(args.source, args.max_frames)
        if args.fps and args.controller == "none":
            frames = paced(frames, args.fps)
        connection = ConnectionOptions(args.tls_ca, args.tls_cert, args.tls_key, token_file=args.auth_token_file)
        client = SplitClient(
            args.server,
            spec,
            args.split,
            args.codec,
            max_in_flight=args.max_in_flight,
            timeout_s=args.timeout,
            on_failure=args.on_failure,
            max_resends=args.max_resends,
            connection=connection,
            width=args.width,
            prefilter=args.prefilter,
            prefilter_threshold=args.prefilter_threshold,
            device_slowdown=args.emulate_slowdown,
            score_threshold=args.score_threshold,
        )
        client.use_local(early_exit=args.local_model == "exit")
    except (ValueError, KeyError, SourceError, CodecError, SplitError, FileNotFoundError) as exc:
        print(f"splitrt-edge: {_message(exc)}", file=sys.stderr)
        return 2
    edge = None
    if args.controller != "none":
        try:
            edge = _adaptive_edge(client, args)
        except (ValueError, KeyError, FileNotFoundError) as exc:
            print(f"splitrt-edge: {_message(exc)}", file=sys.stderr)
            client.close()
            return 2
    with client:
        if not client.model.trained:
            print(
                f"NOTE: {spec.arch} uses untrained weights (deterministic random init, same on edge and server); "
                "timings and bytes are real, detections are not meaningful. The trained model is shapes_fcos.",
                file=sys.stderr,
            )
        if client.mode != "local" or edge is not None:
            try:
                client.wait_ready(args.wait_ready)
            except (TimeoutError, PermissionError, LookupError) as exc:
                print(f"splitrt-edge: {_message(exc)}", file=sys.stderr)
                return 3
        counted = CountedFrames(frames)
        results = edge.run(counted, args.fps) if edge is not None else client.stream(counted)
        try:
            return _run(client, results, counted, out, args)
        finally:
            if edge is not None:
                edge.close()


class CountedFrames:
    """The source, counting the frames taken from it (a stop reports those never answered)."""

    def __init__(self, frames: Iterable[Any]) -> None:
        self._frames = iter(frames)
        self.taken = 0

    def __iter__(self) -> Iterator[Any]:
        for frame in self._frames:
            self.taken += 1
            yield frame


def _adaptive_edge(client: SplitClient, args: argparse.Namespace):
    from ..adapt.controller import AdaptiveController, StaticController
    from .adaptive import AdaptiveEdge, load_profile_for

    profile = load_profile_for(client, args.profile, args.remeasure_s)
    if args.emulate_slowdown != 1.0:  # the profile describes the emulated device
        profile = profile.scaled(args.emulate_slowdown)
    if args.controller == "static":
        if not args.static_config:
            raise ValueError(f"--controller static needs --static-config, one of: {', '.join(profile.names)}")
        controller = StaticController(profile, args.static_config)
    else:
        controller = AdaptiveController(
            profile, args.deadline_ms, args.objective, args.accuracy_floor, hedge=not args.no_hedge
        )
    return AdaptiveEdge(client, profile, controller, args.deadline_ms)


def _run(client: SplitClient, results_iter, frames: CountedFrames, out: ResultsFile, args) -> int:
    results = []
    desc = args.controller if args.controller != "none" else f"{client.mode} {client.split} {client.codec.name}"
    bar = progress_bar(total=args.max_frames, unit="frame", desc=desc)
    if not args.quiet:
        bar.write(report.header(), file=sys.stdout)
    stopped: Stopped | None = None
    try:
        for result in results_iter:
            results.append(result)
            try:
                out.write(result.to_json())
            except OSError as exc:
                bar.close()
                print(f"splitrt-edge: writing {args.out} failed at frame {result.frame_id}: {exc}", file=sys.stderr)
                return 4
            if not args.quiet:
                bar.write(report.row(result), file=sys.stdout)
            bar.update(1)
    except SourceError as exc:
        bar.close()
        print(f"splitrt-edge: {exc}", file=sys.stderr)
        return 2
    except Stopped as exc:
        stopped = exc
        results_iter.close()  # ends the stream: no call or thread is left behind
    bar.close()
    if stopped is not None:
        unanswered = frames.taken - len(results)
        print(
            f"stopped by {stopped.signal_name} after {len(results)} results"
            + (f"; {unanswered} frame(s) read but not answered yet were not awaited" if unanswered > 0 else "")
        )
    print(report.summary(results, deadline_ms=args.deadline_ms if args.controller != "none" else None))
    print("counters: " + "  ".join(f"{k} {v}" for k, v in client.counters.items()))
    if out.lines:
        print(f"results: {args.out}")
    if stopped is not None:
        return stopped.exit_code
    return 0 if all(r.ok for r in results) else 1


def _message(exc: BaseException) -> str:
    """An exception's text (a KeyError's str() is its repr, quotes included)."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


if __name__ == "__main__":
    raise SystemExit(main())
