"""`splitrt simulate --grid`: deadlines x edge slowdowns x traces x ablations x profiles, one table, one heat map.

Each cell is one scenario simulated for every policy: adaptive, every static
configuration (unhedged and hedged) and the hindsight oracle.  The cell is
judged against three targets, printed with the table:

- adaptive mAP in time >= the best static policy's - 0.5;
- adaptive within 5% of the oracle;
- adaptive >= 90% hits wherever some static policy reaches 95%.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..channel.traces import open_trace
from ..extras import optional_plot
from ..outputs import progress_bar
from ..threads import available_cores
from .experiment import best_static, contention_schedule, run_experiment
from .metrics import calibration_error, format_reliability, pooled_reliability, reliability
from .profile import Profile
from .simulate import Scenario

ABLATIONS = ("full", "no-exit", "no-hedge", "no-local")
STATIC_SLACK = 0.5  # mAP in time the adaptive controller may trail the best static policy by
ORACLE_SHARE = 0.95
HIT_TARGET, STATIC_HIT_BAR = 0.90, 0.95
POOLED_MIN_FRAMES = 200  # a pooled bin this full is off by at most ~3.5 points from binomial noise


@dataclass
class Cell:
    profile: str
    trace: str
    deadline_ms: float
    slowdown: float
    ablation: str
    adaptive: float
    adaptive_hits: float
    best_static: str
    best_static_value: float
    best_static_hits: float
    most_static_hits: float
    oracle: float
    skipped: int
    calibration_error: float | None
    seconds: float
    #: The adaptive policy's ``p_in_time`` reliability table in this cell.
    reliability: list[dict] = field(default_factory=list)

    @property
    def vs_static(self) -> float:
        return self.adaptive - self.best_static_value

    @property
    def vs_oracle(self) -> float:
        return self.adaptive / self.oracle if self.oracle > 0 else 1.0

    @property
    def holds(self) -> dict[str, bool]:
        return {
            "static": self.vs_static >= -STATIC_SLACK,
            "oracle": self.vs_oracle >= ORACLE_SHARE,
            "hits": self.most_static_hits < STATIC_HIT_BAR or self.adaptive_hits >= HIT_TARGET,
        }


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{text!r}: expected comma-separated numbers") from None


def ablated(profile: Profile, ablation: str) -> Profile:
    if ablation in ("full", "no-hedge"):
        return profile
    if ablation == "no-exit":
        return profile.without_kind("exit")
    if ablation == "no-local":
        return profile.without_kind("local")
    raise ValueError(f"unknown ablation {ablation!r}; one of {', '.join(ABLATIONS)}")


def run_cell(
    profile: Profile, profile_name: str, trace, deadline_ms: float, slowdown: float, ablation: str, args: Any
) -> Cell:
    scenario = Scenario(
        profile=ablated(profile, ablation).scaled(slowdown),
        trace=trace,
        deadline_ms=deadline_ms,
        fps=args.fps,
        seconds=args.seconds if args.seconds is not None else min(trace.duration_s, 300.0),
        base_rtt_ms=args.rtt_ms,
        load=contention_schedule(args.contention),
        seed=args.seed,
    )
    hedge = ablation != "no-hedge"
    began = time.perf_counter()
    adaptive = ("adaptive",) if hedge else ("adaptive-unhedged",)
    rows, runs = run_experiment(scenario, progress=False, hedged_statics=hedge, adaptive=adaptive)
    by = {r["policy"]: r for r in rows}
    mine = by[adaptive[0]]
    static = best_static(rows)
    statics = [r for r in rows if r["policy"].startswith("static:")]
    return Cell(
        profile=profile_name,
        trace=trace.name,
        deadline_ms=deadline_ms,
        slowdown=slowdown,
        ablation=ablation,
        adaptive=mine["accuracy_in_time"],
        adaptive_hits=mine["hit_rate"],
        best_static=static["policy"].removeprefix("static:"),
        best_static_value=static["accuracy_in_time"],
        best_static_hits=static["hit_rate"],
        most_static_hits=max(r["hit_rate"] for r in statics),
        oracle=by["oracle"]["accuracy_in_time"],
        skipped=mine["skipped"],
        calibration_error=calibration_error(table := reliability(runs[adaptive[0]].frames)),
        seconds=time.perf_counter() - began,
        reliability=table,
    )


def format_grid(cells: list[Cell]) -> str:
    lines = [
        f"{'profile':14s} {'trace':24s} {'deadline':>8s} {'slow':>5s} {'ablation':9s} {'adaptive':>8s} {'hits%':>6s} "
        f"{'best static':34s} {'value':>6s} {'hits%':>6s} {'oracle':>6s} {'vs static':>9s} {'vs oracle':>9s} "
        f"{'skip':>5s} {'cal':>5s} ok"
    ]
    for c in cells:
        ok = "".join("." if held else flag for flag, held in zip("SOH", c.holds.values()))
        cal = "-" if c.calibration_error is None else f"{100 * c.calibration_error:.0f}"
        lines.append(
            f"{c.profile[:14]:14s} {c.trace[:24]:24s} {c.deadline_ms:8g} {c.slowdown:5g} {c.ablation:9s} "
            f"{c.adaptive:8.2f} {100 * c.adaptive_hits:6.1f} {c.best_static[:34]:34s} {c.best_static_value:6.2f} "
            f"{100 * c.best_static_hits:6.1f} {c.oracle:6.2f} {c.vs_static:+9.2f} {100 * c.vs_oracle:8.1f}% "
            f"{c.skipped:5d} {cal:>5s} {ok}"
        )
    n = len(cells)
    held = {k: sum(c.holds[k] for c in cells) for k in ("static", "oracle", "hits")}
    lines.append(
        f"{n} cells: adaptive >= best static - {STATIC_SLACK:g} in {held['static']}/{n}; within "
        f"{100 * (1 - ORACLE_SHARE):g}% of the oracle in {held['oracle']}/{n}; >= {100 * HIT_TARGET:g}% hits where a "
        f"static reaches {100 * STATIC_HIT_BAR:g}% in {held['hits']}/{n}  (ok column: S/O/H mark a missed target)"
    )
    pooled = pooled_reliability([c.reliability for c in cells])
    if pooled:
        big = [r for r in pooled if r["frames"] >= POOLED_MIN_FRAMES]
        worst = max((abs(r["predicted"] - r["observed"]) for r in big), default=None)
        lines.append(
            "p_in_time reliability of the adaptive policy, pooled over every cell (cal column: the largest gap "
            "in one cell's bins of >= 20 frames, which binomial noise alone puts near 10 points)"
        )
        lines += format_reliability(pooled)
        if worst is not None:
            lines.append(f"largest pooled gap in bins of >= {POOLED_MIN_FRAMES} frames: {100 * worst:.1f} points")
    return "\n".join(lines)


def heat_map(cells: list[Cell], path: Path) -> Path:
    from ..extras import pyplot

    plt = pyplot()
    import numpy as np

    rows = sorted({(c.profile, c.trace, c.ablation) for c in cells})
    cols = sorted({(c.deadline_ms, c.slowdown) for c in cells})
    values = np.full((len(rows), len(cols)), np.nan)
    for c in cells:
        values[rows.index((c.profile, c.trace, c.ablation)), cols.index((c.deadline_ms, c.slowdown))] = c.vs_static
    limit = max(1.0, float(np.nanmax(np.abs(values))))
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 5, 0.42 * len(rows) + 2))
    image = ax.imshow(values, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:+.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), [f"{d:g} ms\n{s:g}x" for d, s in cols], fontsize=7)
    ax.set_yticks(range(len(rows)), [f"{p} | {t} | {a}" for p, t, a in rows], fontsize=7)
    ax.set_xlabel("deadline / edge slowdown")
    fig.colorbar(image, ax=ax, label="adaptive - best static (hedged included), mAP in time")
    ax.set_title("adaptive minus the best static policy in each scenario")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell_job(job: tuple) -> Cell:
    name, profile, trace, d, s, a, args = job
    return run_cell(profile, name, trace, d, s, a, args)


def _run_cells(combos: list[tuple], args: Any) -> list[Cell]:
    """Every cell, on ``--jobs`` processes (cells are independent and each is single-threaded)."""
    jobs = [(*combo, args) for combo in combos]
    workers = min(len(jobs), max(1, getattr(args, "jobs", None) or available_cores()))
    if workers <= 1:
        return [_cell_job(job) for job in progress_bar(jobs, desc="grid", unit="cell")]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        cells = pool.map(_cell_job, jobs)
        return list(progress_bar(cells, total=len(jobs), desc=f"grid ({workers} processes)", unit="cell"))


def grid_main(args: Any) -> int:
    deadlines, slowdowns = _floats(args.deadlines), _floats(args.slowdowns)
    ablations = [a.strip() for a in args.ablations.split(",") if a.strip()]
    for ablation in ablations:
        if ablation not in ABLATIONS:
            raise SystemExit(f"unknown ablation {ablation!r}; one of {', '.join(ABLATIONS)}")
    profiles = {Path(p).stem: Profile.load(p) for p in args.profile}
    traces = [open_trace(t, args.gilbert_elliott, args.seed) for t in args.trace]
    combos = [
        (name, profile, trace, d, s, a)
        for name, profile in profiles.items()
        for trace in traces
        for a in ablations
        for d in deadlines
        for s in slowdowns
    ]
    cells = _run_cells(combos, args)
    print(format_grid(cells))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = optional_plot(heat_map, cells, out / "grid.png")
    data = [{**asdict(c), "vs_static": c.vs_static, "vs_oracle": c.vs_oracle, "holds": c.holds} for c in cells]
    (out / "grid.json").write_text(json.dumps({"fps": args.fps, "rtt_ms": args.rtt_ms, "cells": data}, indent=1))
    print("written:", out / "grid.json", *([png] if png else []))
    return 0
