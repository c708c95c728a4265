"""`splitrt simulate`: every policy over one trace, a table, JSON and two plots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..channel.traces import open_trace
from .profile import Profile
from .simulate import RunResult, Scenario, Simulator, policies


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


def run_experiment(scenario: Scenario, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, RunResult]]:
    simulator = Simulator(scenario)
    rows, runs = [], {}
    for policy in tqdm(policies(scenario.profile), desc=f"simulate {scenario.trace.name}", disable=not progress):
        result = simulator.run(policy)
        runs[policy] = result
        rows.append(result.summary(scenario.deadline_ms))
    return rows, runs


def best_static(rows: list[dict[str, Any]], remote_only: bool = True) -> dict[str, Any]:
    statics = [r for r in rows if r["policy"].startswith("static:")]
    if remote_only:
        statics = [r for r in statics if not r["policy"].startswith(LOCAL_POLICIES)]
    return max(statics, key=lambda r: (r["hit_rate"], r["mean_accuracy"]))


#: Static policies that run on the device alone (the names of local configurations).
LOCAL_POLICIES = ("static:local", "static:exit@")


def format_table(rows: list[dict[str, Any]], title: str) -> str:
    lines = [
        title,
        f"{'policy':34s} {'hit %':>7s} {'mean ms':>8s} {'p95 ms':>8s} {'mAP':>6s} {'mAP in time':>11s} "
        f"{'MB sent':>8s} {'switch/min':>10s} {'fallbacks':>9s}",
    ]
    for r in rows:
        lines.append(
            f"{r['policy']:34s} {100 * r['hit_rate']:7.2f} {r['mean_latency_ms']:8.1f} {r['p95_latency_ms']:8.1f} "
            f"{r['mean_accuracy']:6.1f} {r['accuracy_in_time']:11.1f} {r['bytes_sent'] / 1e6:8.2f} "
            f"{r['switches_per_min']:10.2f} {r['fallbacks']:9d}"
        )
    return "\n".join(lines)


def plot(runs: dict[str, RunResult], scenario: Scenario, out_prefix: Path, static_policy: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adaptive, oracle = runs["adaptive"], runs["oracle"]
    t = np.array([f.captured_s for f in adaptive.frames])
    names = scenario.profile.names
    fig, axes = plt.subplots(3, 1, figsize=(13, 9), sharex=True)
    axes[0].plot(t, [f.capacity_mbps for f in adaptive.frames], lw=0.8, label="trace capacity (1 s window)")
    axes[0].plot(t, [f.bandwidth_mbps or 0 for f in adaptive.frames], lw=0.8, label="adaptive: predicted bandwidth")
    axes[0].set_ylabel("Mbit/s")
    axes[0].set_yscale("symlog", linthresh=0.1)
    axes[0].legend(loc="upper right")
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
    for policy in ("adaptive", "oracle", static_policy, f"static:{scenario.profile.fastest_local().name}"):
        lat = np.sort([f.latency_ms for f in runs[policy].frames])
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


def main(args: Any) -> int:
    profile = Profile.load(args.profile)
    if args.without:
        profile = profile.without(args.without)
    if args.edge_slowdown != 1.0:
        profile = profile.scaled(args.edge_slowdown)
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
        overall = best_static(rows, remote_only=False)
        title = (
            f"\n{trace.name}: {trace.duration_s:.0f} s, mean {trace.mean_mbps:.2f} Mbit/s; deadline "
            f"{args.deadline_ms:g} ms, {args.fps:g} fps, base RTT {args.rtt_ms:g} ms, edge slowdown "
            f"{args.edge_slowdown:g}x; simulated in {elapsed:.1f} s"
        )
        print(format_table(rows, title))
        adaptive = next(r for r in rows if r["policy"] == "adaptive")
        oracle = next(r for r in rows if r["policy"] == "oracle")
        verdict = {
            "trace": trace.name,
            "best_static_remote": static["policy"],
            "best_static_hit_rate": static["hit_rate"],
            "adaptive_hit_rate": adaptive["hit_rate"],
            "adaptive_vs_oracle_accuracy": adaptive["mean_accuracy"] / oracle["mean_accuracy"],
            "adaptive_switches_per_min": adaptive["switches_per_min"],
            "best_static_overall": overall["policy"],
            "best_static_overall_hit_rate": overall["hit_rate"],
            "best_static_overall_vs_oracle_accuracy": overall["mean_accuracy"] / oracle["mean_accuracy"],
        }
        print(
            f"best static remote: {static['policy']} {100 * static['hit_rate']:.1f}% | adaptive "
            f"{100 * adaptive['hit_rate']:.2f}% hits, accuracy {100 * verdict['adaptive_vs_oracle_accuracy']:.1f}% "
            f"of the oracle's, {adaptive['switches_per_min']:.1f} switches/min | best static overall: "
            f"{overall['policy']} {100 * overall['hit_rate']:.1f}%, accuracy "
            f"{100 * verdict['best_static_overall_vs_oracle_accuracy']:.1f}% of the oracle's"
        )
        prefix = out_dir / trace.name.replace(".", "_")
        pngs = plot(runs, scenario, prefix, static["policy"])
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
