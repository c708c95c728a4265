"""`splitrt simulate`: every policy over one trace, a table, JSON and two plots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..channel.traces import open_trace
from ..extras import optional_plot
from ..outputs import progress_bar
from .metrics import calibration_error, reliability
from .oracle import oracle_run
from .profile import Profile
from .simulate import ADAPTIVE, RunResult, Scenario, Simulator, policies


def contention_schedule(spec: str | None):
    """``START:END:FACTOR[,...]`` seconds -> a function t -> device slowdown (1 outside the windows)."""
    windows = []
    for part in (spec or "").split(","):
        if part.strip():
            try:
                start, end, factor = (float(v) for v in part.split(":"))
            except ValueError:
                raise ValueError(f"contention {part!r}: expected START:END:FACTOR, e.g. 60:120:2") from None
            windows.append((start, end, factor))

    def load(t: float) -> float:
        return next((f for s, e, f in windows if s <= t < e), 1.0)

    return load


def run_experiment(
    scenario: Scenario, progress: bool = True, hedged_statics: bool = True, adaptive: tuple[str, ...] = ADAPTIVE
) -> tuple[list[dict[str, Any]], dict[str, RunResult]]:
    """Every policy over one scenario; the oracle last, protecting the states every static policy reached."""
    simulator = Simulator(scenario)
    rows, runs = [], {}
    names = [
        p for p in policies(scenario.profile, hedged_statics) if p != "oracle" and (p in adaptive or p not in ADAPTIVE)
    ]
    for policy in progress_bar(names, desc=f"simulate {scenario.trace.name}", enabled=progress, leave=False):
        runs[policy] = simulator.run(policy)
    statics = {name: run for name, run in runs.items() if name.startswith("static:")}
    runs["oracle"] = oracle_run(simulator, protect=statics)
    rows = [run.summary(scenario.deadline_ms) for run in runs.values()]
    return rows, runs


def best_static(rows: list[dict[str, Any]], remote_only: bool = False) -> dict[str, Any]:
    """The static policy (hedged ones included) with the highest mAP in time."""
    statics = [r for r in rows if r["policy"].startswith("static:")]
    if remote_only:
        statics = [r for r in statics if not r["policy"].startswith(LOCAL_POLICIES)]
    return max(statics, key=lambda r: (r["accuracy_in_time"], r["hit_rate"]))


#: Static policies that run on the device alone (the names of local configurations).
LOCAL_POLICIES = ("static:local", "static:exit@")


def format_table(rows: list[dict[str, Any]], title: str) -> str:
    lines = [
        title,
        f"{'policy':44s} {'mAP in time':>11s} {'hit %':>7s} {'p95 ms':>8s} {'skipped':>7s} {'late':>5s} "
        f"{'fallback':>8s} {'switch/min':>10s} {'MB sent':>8s} {'mAP delivered':>13s}",
    ]
    for r in rows:
        lines.append(
            f"{r['policy']:44s} {r['accuracy_in_time']:11.2f} {100 * r['hit_rate']:7.2f} {r['p95_latency_ms']:8.1f} "
            f"{r['skipped']:7d} {r['timeouts']:5d} {r['fallbacks']:8d} {r['switches_per_min']:10.2f} "
            f"{r['bytes_sent'] / 1e6:8.2f} {r['mean_accuracy']:13.1f}"
        )
    return "\n".join(lines)


def format_reliability(table: list[dict[str, Any]]) -> str:
    lines = ["p_in_time reliability (remote frames): predicted vs observed share answered by the deadline",
             f"{'bin':>9s} {'frames':>7s} {'predicted':>9s} {'observed':>8s}"]  # fmt: skip
    for row in table:
        lines.append(f"{row['bin']:>9s} {row['frames']:7d} {row['predicted']:9.2f} {row['observed']:8.2f}")
    return "\n".join(lines)


def plot(runs: dict[str, RunResult], scenario: Scenario, out_prefix: Path, static_policy: str) -> list[Path]:
    from ..extras import pyplot

    plt = pyplot()

    adaptive, oracle = runs["adaptive"], runs["oracle"]
    t = np.array([f.captured_s for f in adaptive.frames])
    names = scenario.profile.names
    fig, axes = plt.subplots(3, 1, figsize=(13, 9), sharex=True)
    axes[0].plot(t, [f.capacity_mbps for f in adaptive.frames], lw=0.8, label="trace capacity (1 s window)")
    axes[0].plot(t, [f.bandwidth_mbps or 0 for f in adaptive.frames], lw=0.8, label="adaptive: predicted bandwidth")
    axes[0].set_ylabel("Mbit/s")
    axes[0].set_yscale("symlog", linthresh=0.1)
    axes[0].legend(loc="upper right")
    names = ["skip", *names]
    axes[1].scatter(t, [names.index(f.config) for f in oracle.frames], s=2, c="tab:gray", label="oracle")
    axes[1].scatter(t, [names.index(f.config) for f in adaptive.frames], s=2, c="tab:red", label="adaptive")
    axes[1].set_yticks(range(len(names)), names, fontsize=7)
    axes[1].legend(loc="upper right")
    axes[2].plot(t, [f.latency_ms for f in runs[static_policy].frames], lw=0.6, c="tab:gray", label=static_policy)
    axes[2].plot(t, [f.latency_ms for f in adaptive.frames], lw=0.6, c="tab:red", label="adaptive")
    axes[2].axhline(scenario.deadline_ms, c="k", ls="--", lw=0.8, label="deadline")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("latency (ms)")
    axes[2].set_xlabel("time (s)")
    axes[2].legend(loc="upper right")
    fig.suptitle(f"{scenario.trace.name}: deadline {scenario.deadline_ms:g} ms, {scenario.fps:g} fps")
    fig.tight_layout()
    timeline = out_prefix.with_name(out_prefix.name + "-timeline.png")
    fig.savefig(timeline, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    fastest = scenario.profile.fastest_local()
    shown = ["adaptive", "oracle", static_policy] + ([f"static:{fastest.name}"] if fastest is not None else [])
    for policy in dict.fromkeys(shown):
        lat = np.sort([f.latency_ms for f in runs[policy].frames if not np.isnan(f.latency_ms)])
        ax.plot(lat, np.arange(1, lat.size + 1) / lat.size, label=policy)
    ax.axvline(scenario.deadline_ms, c="k", ls="--", lw=0.8, label="deadline")
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of frames")
    ax.legend()
    ax.set_title(f"latency CDF, {scenario.trace.name}")
    fig.tight_layout()
    cdf = out_prefix.with_name(out_prefix.name + "-cdf.png")
    fig.savefig(cdf, dpi=110)
    plt.close(fig)
    return [timeline, cdf]


def scenario_profile(args: Any, path: str) -> Profile:
    profile = Profile.load(path)
    if args.without:
        profile = profile.without(args.without)
    if args.edge_slowdown != 1.0:
        profile = profile.scaled(args.edge_slowdown)
    return profile


def profile_paths(args: Any) -> list[str]:
    from ..defaults import PROFILES_DIR

    return args.profile or [str(PROFILES_DIR / "shapes_fcos.json")]


def main(args: Any) -> int:
    args.profile = profile_paths(args)
    if args.grid:
        from .grid import grid_main

        return grid_main(args)
    profile = scenario_profile(args, args.profile[0])
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for trace_path in args.trace:
        trace = open_trace(trace_path, args.gilbert_elliott, args.seed)
        scenario = Scenario(
            profile=profile,
            trace=trace,
            deadline_ms=args.deadline_ms,
            fps=args.fps,
            seconds=args.seconds,
            base_rtt_ms=args.rtt_ms,
            load=contention_schedule(args.contention),
            seed=args.seed,
        )
        began = time.perf_counter()
        rows, runs = run_experiment(scenario)
        elapsed = time.perf_counter() - began
        static = best_static(rows)
        title = (
            f"\n{trace.name}: {trace.duration_s:.0f} s, mean {trace.mean_mbps:.2f} Mbit/s; deadline "
            f"{args.deadline_ms:g} ms, {args.fps:g} fps, base RTT {args.rtt_ms:g} ms, edge slowdown "
            f"{args.edge_slowdown:g}x; simulated in {elapsed:.1f} s"
        )
        print(format_table(rows, title))
        by = {r["policy"]: r for r in rows}
        adaptive, oracle = by["adaptive"], by["oracle"]
        table = reliability(runs["adaptive"].frames)
        verdict = {
            "trace": trace.name,
            "adaptive_map_in_time": adaptive["accuracy_in_time"],
            "adaptive_hit_rate": adaptive["hit_rate"],
            "best_static": static["policy"],
            "best_static_map_in_time": static["accuracy_in_time"],
            "best_static_hit_rate": static["hit_rate"],
            "oracle_map_in_time": oracle["accuracy_in_time"],
            "adaptive_vs_best_static": adaptive["accuracy_in_time"] - static["accuracy_in_time"],
            "adaptive_vs_oracle": adaptive["accuracy_in_time"] / oracle["accuracy_in_time"]
            if oracle["accuracy_in_time"] > 0
            else None,
            "adaptive_switches_per_min": adaptive["switches_per_min"],
            "calibration_error": calibration_error(table),
        }
        ratio = verdict["adaptive_vs_oracle"]
        print(
            f"mAP in time: adaptive {adaptive['accuracy_in_time']:.2f} ({100 * adaptive['hit_rate']:.1f}% hits) | "
            f"best static {static['policy']} {static['accuracy_in_time']:.2f} ({100 * static['hit_rate']:.1f}%) | "
            f"oracle {oracle['accuracy_in_time']:.2f}"
            + (f" | adaptive = {100 * ratio:.1f}% of the oracle" if ratio is not None else "")
        )
        print(format_reliability(table))
        prefix = out_dir / trace.name.replace(".", "_")
        pngs = optional_plot(plot, runs, scenario, prefix, static["policy"]) or []
        json_path = prefix.with_name(prefix.name + ".json")
        json_path.write_text(
            json.dumps(
                {
                    "trace": trace.name,
                    "scenario": {
                        "deadline_ms": args.deadline_ms,
                        "fps": args.fps,
                        "rtt_ms": args.rtt_ms,
                        "edge_slowdown": args.edge_slowdown,
                        "seconds": args.seconds,
                    },
                    "rows": rows,
                    "verdict": verdict,
                    "reliability": table,
                    "adaptive_frames": [f.__dict__ for f in runs["adaptive"].frames],
                },
                indent=1,
            )
        )
        summary.append(verdict)
        print("written:", json_path, *pngs)
    live = None
    if args.live_seconds > 0:
        from .live import run_live

        print(f"\nlive check: {args.live_seconds:g} s of {args.trace[0]} through splitrt channel ...")
        live = run_live(
            args.trace[0],
            args.deadline_ms,
            args.fps,
            args.live_seconds,
            args.rtt_ms,
            args.edge_slowdown,
            out_dir,
        )
        print(
            f"live hit rate {100 * live['live_hit_rate']:.1f}% vs simulated {100 * live['simulated_hit_rate']:.1f}% "
            f"(difference {100 * live['difference']:+.1f} points); mean latency live "
            f"{live['live_mean_latency_ms']:.0f} ms vs simulated {live['simulated_mean_latency_ms']:.0f} ms; "
            f"live modes {live['live_modes']}"
        )
        print(
            f"the live edge measured device load x{live['live_device_load']:.2f} and base RTT "
            f"{live['live_rtt_ms']:.0f} ms; simulated with those: "
            f"{100 * live['simulated_with_live_load_hit_rate']:.1f}% "
            f"(difference {100 * live['difference_with_live_load']:+.1f} points)"
        )
    (out_dir / "summary.json").write_text(json.dumps({"traces": summary, "live": live}, indent=2))
    return 0
