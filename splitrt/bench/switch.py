"""`splitrt bench switch`: what changing the slimmable width costs, against reloading a fixed bottleneck.

Both are measured side by side in one run on this machine:
- switch: the extra time of the first frame after ``set_width`` compared with
  a frame at an unchanged width (and the ``set_width`` call itself);
- reload: what a user without slimmability does to change rate: build the
  separately trained bottleneck of that size, load its weights from disk
  (safetensors), and run its first frame.
Also: head time per width (the encoder computes only the channels it sends),
and the memory of an edge process holding every width as one slimmable
bottleneck vs as one fixed bottleneck per width.
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..codecs import get_codec
from ..data.datasets import ShapesDetection
from ..models import build_model
from ..models.bottleneck import BottleneckBranch

SLIM = "features.6/slim"
FIXED = "features.6/eb2"


def _frame_ms(model, split: str, image: torch.Tensor) -> float:
    codec = get_codec("entropy", model, split)
    began = time.perf_counter()
    with torch.inference_mode():
        features, _ = model.head(image, split)
        codec.encode(features)
    return (time.perf_counter() - began) * 1e3


def switch_costs(model, images: list[torch.Tensor], repeats: int) -> dict[str, Any]:
    branch = model.branch(SLIM)
    widths = list(branch.widths)
    for image in images[:3]:  # warm-up
        for w in widths:
            branch.set_width(w)
            _frame_ms(model, SLIM, image)
    steady, after_switch, set_calls = [], [], []
    for i in range(repeats):
        image = images[i % len(images)]
        a, b = widths[i % len(widths)], widths[(i + 1) % len(widths)]
        branch.set_width(b)
        _frame_ms(model, SLIM, image)
        steady.append(_frame_ms(model, SLIM, image))  # b, unchanged width
        branch.set_width(a)
        _frame_ms(model, SLIM, image)
        began = time.perf_counter()
        branch.set_width(b)
        set_calls.append((time.perf_counter() - began) * 1e3)
        after_switch.append(_frame_ms(model, SLIM, image))  # b, right after a switch
    return {
        "set_width_ms": statistics.median(set_calls),
        "frame_ms_steady": statistics.median(steady),
        "frame_ms_after_switch": statistics.median(after_switch),
        "switch_overhead_ms": max(0.0, statistics.median(after_switch) - statistics.median(steady))
        + statistics.median(set_calls),
    }


def reload_costs(model, images: list[torch.Tensor], repeats: int) -> dict[str, Any]:
    """Load the fixed bottleneck of this size from disk and run its first frame, from scratch each time."""
    from safetensors.torch import load_file, save_file

    branch = model.branch(FIXED)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fixed-bottleneck.safetensors"
        save_file({k: v.contiguous() for k, v in branch.state_dict().items()}, str(path))
        costs = []
        for i in range(repeats):
            image = images[i % len(images)]
            began = time.perf_counter()
            fresh = BottleneckBranch(copy.deepcopy(branch.student), branch.decoder[-1].out_channels, branch.config)
            fresh.load_state_dict(load_file(str(path)))  # CompressAI's: sizes the CDF buffers to the saved ones
            fresh.eval()
            with torch.inference_mode():
                images_batch, _ = model.detector.transform([image])
                fresh.compress_latent(fresh.encode(images_batch.tensors))
            costs.append((time.perf_counter() - began) * 1e3)
    return {"reload_and_first_frame_ms": statistics.median(costs)}


def head_scaling(model, images: list[torch.Tensor], repeats: int) -> list[dict[str, Any]]:
    branch = model.branch(SLIM)
    rows = []
    for width in branch.widths:
        branch.set_width(width)
        times, sizes = [], []
        for i in range(repeats):
            image = images[i % len(images)]
            times.append(_frame_ms(model, SLIM, image))
            with torch.inference_mode():
                sizes.append(len(get_codec("entropy", model, SLIM).encode(model.head(image, SLIM)[0])))
        rows.append(
            {
                "width": width,
                "channels": branch.channels(width),
                "head_encode_ms": statistics.median(times),
                "bytes_mean": statistics.fmean(sizes),
            }
        )
    return rows


_MEMORY_PROBE = r"""
import gc, sys, psutil, torch
from dataclasses import replace
from splitrt.models import build_model
from splitrt.models.bottleneck import BottleneckBranch
from splitrt.data.datasets import ShapesDetection
model = build_model("shapes_fcos")
slim = model.branch("features.6/slim")
student, channels, config = slim.student, slim.decoder[-1].out_channels, slim.config
image = ShapesDetection("test", 1)[0][0]
with torch.inference_mode():
    x = model.detector.transform([image])[0].tensors
del model
gc.collect()
rss_before = psutil.Process().memory_info().rss
torch.manual_seed(0)
if sys.argv[1] == "slimmable":
    branches = [(slim, w) for w in slim.widths]
else:  # the alternative: one fixed bottleneck per width, all kept loaded
    configs = [replace(config, latent_channels=slim.channels(w), widths=None) for w in slim.widths]
    branches = [(BottleneckBranch(student, channels, c), None) for c in configs]
    for b, _ in branches:
        b.update(force=True)
with torch.inference_mode():
    for branch, width in branches:
        branch.eval()
        branch.compress_latent(branch.encode(x, width))
unique = {id(t): t for b, _ in branches for t in list(b.parameters()) + list(b.buffers())}
weights = sum(t.numel() * t.element_size() for t in unique.values())
print((psutil.Process().memory_info().rss - rss_before) / 2**20, weights / 2**20)
"""


def peak_memory_mb(kind: str) -> tuple[float, float]:
    """RSS growth of a process once it holds the bottleneck(s) for every width, and their weights (MB)."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, kind], capture_output=True, text=True, check=True)
    rss, weights = out.stdout.strip().splitlines()[-1].split()
    return float(rss), float(weights)


def run(repeats: int = 30) -> dict[str, Any]:
    model = build_model("shapes_fcos")
    if not model.trained:
        raise ValueError("bench switch needs the trained shapes_fcos weights")
    data = ShapesDetection("test", 8)
    images = [data[i][0] for i in range(len(data))]
    switch = switch_costs(model, images, repeats)
    reload = reload_costs(model, images, max(5, repeats // 3))
    return {
        "benchmark": "switch",
        "slimmable_split": SLIM,
        "fixed_split": FIXED,
        **switch,
        **reload,
        "reload_over_switch": reload["reload_and_first_frame_ms"] / max(switch["switch_overhead_ms"], 1e-6),
        "head_scaling": head_scaling(model, images, repeats // 2),
        **_memory(),
    }


def _memory() -> dict[str, float]:
    slim_rss, slim_weights = peak_memory_mb("slimmable")
    fixed_rss, fixed_weights = peak_memory_mb("fixed")
    return {
        "rss_mb_slimmable_all_widths": slim_rss,
        "weights_mb_slimmable_all_widths": slim_weights,
        "rss_mb_fixed_one_per_width": fixed_rss,
        "weights_mb_fixed_one_per_width": fixed_weights,
    }


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"bench switch: {r['slimmable_split']} (all widths, one set of weights) vs reloading {r['fixed_split']}",
        f"  set_width call:                        {r['set_width_ms'] * 1000:9.1f} us",
        f"  frame at unchanged width:              {r['frame_ms_steady']:9.2f} ms",
        f"  frame right after a width switch:      {r['frame_ms_after_switch']:9.2f} ms",
        f"  => switch overhead:                    {r['switch_overhead_ms']:9.3f} ms",
        f"  reload fixed bottleneck + first frame: {r['reload_and_first_frame_ms']:9.2f} ms",
        f"  => reload / switch:                    {r['reload_over_switch']:9.0f}x",
        f"  all 4 widths, one slimmable bottleneck: RSS +{r['rss_mb_slimmable_all_widths']:.1f} MB, "
        f"weights {r['weights_mb_slimmable_all_widths']:.2f} MB",
        f"  4 fixed bottlenecks, one per width:     RSS +{r['rss_mb_fixed_one_per_width']:.1f} MB, "
        f"weights {r['weights_mb_fixed_one_per_width']:.2f} MB",
        f"  {'width':>6} {'channels':>8} {'head+encode ms':>15} {'bytes/frame':>12}",
    ]
    for row in r["head_scaling"]:
        lines.append(
            f"  {row['width']:>6.2f} {row['channels']:>8} {row['head_encode_ms']:>15.2f} {row['bytes_mean']:>12.0f}"
        )
    return "\n".join(lines)


def main(repeats: int, out: Path) -> int:
    result = run(repeats)
    print(format_table(result))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    return 0
