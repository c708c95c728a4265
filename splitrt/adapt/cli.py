"""`splitrt profile`: measure every configuration of a model on validation images."""

from __future__ import annotations

from typing import Any

import torch

from ..data.datasets import ShapesDetection
from ..models import build_model
from .profile import Profile, default_configurations, device_description, measure


def profile_main(args: Any) -> int:
    from ..threads import apply_threads, edge_threads

    # Measured with the threads the edge uses beside a server on this machine (a profile is re-measured
    # at start-up on the real device, where the edge's own default applies).
    threads = apply_threads(getattr(args, "threads", None), edge_threads("127.0.0.1:0"))
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
