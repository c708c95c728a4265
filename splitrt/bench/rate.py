"""`splitrt bench rate`: mAP against bytes per frame, for every way of getting a frame to the tail.

Batch size 1, test split (never seen in training), bytes = length of the
actual encoded payload that would go in raw_input_contents.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from ..codecs import get_codec
from ..data.datasets import ShapesDetection
from ..data.evaluate import coco_map, to_coco_results
from ..extras import optional_plot
from ..models import INPUT_SPLIT, build_model
from ..models.base import SplitModel
from ..outputs import progress_bar

JPEG_QUALITIES = [10, 20, 30, 50, 70, 90, 95]
WEBP_QUALITIES = [10, 30, 50, 80]


def configurations(model: SplitModel) -> list[tuple[str, str, str, float | None]]:
    """(family, split, codec, width) for every curve of the plot."""
    configs: list[tuple[str, str, str, float | None]] = [("local teacher", "local", "local", None)]
    if getattr(model, "early_exit", None) is not None:
        configs.append(("local early exit", "local", "exit", None))
    configs += [("JPEG", INPUT_SPLIT, f"jpeg:{q}", None) for q in JPEG_QUALITIES]
    configs += [("WebP", INPUT_SPLIT, f"webp:{q}", None) for q in WEBP_QUALITIES]
    for cut in ("features.3", "features.6"):
        configs += [(f"teacher {cut} fp16", cut, "fp16", None), (f"teacher {cut} int8+zstd", cut, "int8-zstd", None)]
    for split in getattr(model, "branch_splits", []):
        branch = model.branch(split)
        if branch.slimmable:
            configs += [("slimmable entropy (per width)", split, "entropy", w) for w in branch.widths]
        elif split.endswith("/bn"):
            configs.append(("bottleneck int8+zstd", split, "bottleneck-int8-zstd", None))
        else:
            configs.append(("entropy bottleneck", split, "entropy", None))
    return configs


@torch.inference_mode()
def evaluate(
    model: SplitModel, dataset: ShapesDetection, split: str, codec_name: str, width: float | None = None
) -> dict[str, Any]:
    sizes, results = [], []
    codec = None if codec_name in ("local", "exit") else get_codec(codec_name, model, split)
    if width is not None:
        model.branch(split).set_width(width)
    for index in range(len(dataset)):
        image = dataset[index][0]
        if codec is None:
            out = model.exit_detect(image) if codec_name == "exit" else model.full(image)
            sizes.append(0)
        else:
            features, meta = model.head(image, split)
            payload = codec.encode(features)
            sizes.append(len(payload))
            out = model.tail(codec.decode(payload), meta, split)
        results += to_coco_results(dataset.image_id(index), out["boxes"], out["scores"], out["labels"])
    metrics = coco_map(dataset.coco(), results)
    return {**metrics, "bytes_mean": statistics.fmean(sizes), "bytes_median": statistics.median(sizes)}


def run(weights: str | None, count: int) -> dict[str, Any]:
    model = build_model("shapes_fcos", weights=weights)
    if not model.trained:
        raise ValueError("bench rate needs trained shapes_fcos weights (ship them or pass --weights)")
    dataset = ShapesDetection("test", count)
    rows = []
    for family, split, codec, width in progress_bar(configurations(model), desc="bench rate", unit="config"):
        row = {"family": family, "split": split, "codec": codec, "width": width}
        rows.append({**row, **evaluate(model, dataset, split, codec, width)})
    return {
        "benchmark": "rate",
        "model": "shapes_fcos",
        "split": "test",
        "images": count,
        "rows": rows,
        "summary": summarise(rows),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each entropy point against the cheapest JPEG at least as accurate, and against the teacher.

    Where no JPEG quality reaches a point's mAP, the most expensive JPEG (still less accurate)
    gives a lower bound on the byte ratio.
    """
    teacher = next(r for r in rows if r["codec"] == "local")
    jpeg = sorted((r for r in rows if r["family"] == "JPEG"), key=lambda r: r["bytes_mean"])
    points = []
    for r in (r for r in rows if r["codec"] == "entropy"):
        matching = [j for j in jpeg if j["map"] >= r["map"]]
        reference = matching[0] if matching else jpeg[-1]
        points.append(
            {
                "split": r["split"],
                "width": r["width"],
                "map": r["map"],
                "bytes_mean": r["bytes_mean"],
                "map_drop_vs_teacher": teacher["map"] - r["map"],
                "jpeg": reference["codec"],
                "jpeg_map": reference["map"],
                "jpeg_bytes": reference["bytes_mean"],
                "jpeg_reaches_this_map": bool(matching),
                "bytes_ratio_jpeg_over_entropy": reference["bytes_mean"] / r["bytes_mean"],
            }
        )
    meeting = [p for p in points if p["bytes_ratio_jpeg_over_entropy"] >= 10 and p["map_drop_vs_teacher"] <= 1.0]
    return {
        "teacher_map": teacher["map"],
        "entropy_points": points,
        "points_meeting_both_targets": [p["split"] + (f"@{p['width']}" if p["width"] else "") for p in meeting],
        "target_met": bool(meeting),
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"bench rate: shapes_fcos on {result['images']} test images, batch 1, bytes = wire payload",
        f"{'family':>30} {'split':>15} {'codec':>20} {'width':>5} {'kB/frame':>9} {'mAP':>6} {'mAP50':>6}",
    ]
    for r in result["rows"]:
        width = "" if r["width"] is None else f"{r['width']:.2f}"
        lines.append(
            f"{r['family']:>30} {r['split']:>15} {r['codec']:>20} {width:>5} {r['bytes_mean'] / 1000:>9.3f} "
            f"{r['map']:>6.1f} {r['map50']:>6.1f}"
        )
    s = result["summary"]
    lines.append(
        f"teacher (local) mAP {s['teacher_map']:.1f}; each entropy point vs the cheapest JPEG at least as accurate:"
    )
    for p in s.get("entropy_points", []):
        name = p["split"] + (f" @ width {p['width']:.2f}" if p["width"] else "")
        relation = "" if p["jpeg_reaches_this_map"] else " (no JPEG quality gets there: a lower bound)"
        lines.append(
            f"  {name:>28}: mAP {p['map']:.1f} (-{p['map_drop_vs_teacher']:.1f} vs teacher) "
            f"at {p['bytes_mean']:.0f} B; "
            f"{p['jpeg']} mAP {p['jpeg_map']:.1f} at {p['jpeg_bytes']:.0f} B -> "
            f"{p['bytes_ratio_jpeg_over_entropy']:.1f}x{relation}"
        )
    met = ", ".join(s.get("points_meeting_both_targets", [])) or "none"
    lines.append(f"points with >=10x fewer bytes than JPEG and within 1.0 mAP of the teacher: {met}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from ..extras import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 5.5))
    families: dict[str, list[dict[str, Any]]] = {}
    for r in result["rows"]:
        families.setdefault(r["family"], []).append(r)
    for family, rows in families.items():
        if family == "local teacher":
            ax.axhline(rows[0]["map"], color="black", linestyle="--", linewidth=1, label="local teacher (no network)")
            continue
        if family == "local early exit":
            ax.axhline(rows[0]["map"], color="gray", linestyle=":", linewidth=1, label="local early exit (no network)")
            continue
        rows = sorted(rows, key=lambda r: r["bytes_mean"])
        style = "-o" if len(rows) > 1 else "s"
        ax.plot([r["bytes_mean"] / 1000 for r in rows], [r["map"] for r in rows], style, label=family, markersize=5)
    ax.set_xscale("log")
    ax.set_xlabel("kB per frame on the wire (log scale)")
    ax.set_ylabel("mAP@[.5:.95] (%)")
    ax.set_title(f"shapes_fcos: accuracy vs bytes ({result['images']} test images)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(weights: str | None, count: int, out: Path) -> int:
    result = run(weights, count)
    print(format_table(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    png = out.with_suffix(".png")
    drawn = optional_plot(plot, result, png)
    print(f"written: {out}" + (f", {png}" if drawn is not False else ""))
    return 0
