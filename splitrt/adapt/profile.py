"""Per-device profiles: what each configuration costs on the edge, on the wire and on the server, and what it buys.

A configuration is one way of producing a frame's detections: the whole
model on the device (optionally at a lower input size, a cheaper local
model), the frame itself sent as JPEG, or a split point with a codec (and a
width for slimmable bottlenecks).  ``splitrt profile`` measures every one on
validation images and writes JSON the controller loads; the edge can
re-measure the head times alone at start-up (``remeasure_heads``) because
those are the numbers that differ between devices.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..codecs import get_codec
from ..models import INPUT_SPLIT
from ..models.base import SplitModel

LOCAL = "local"
PROFILE_VERSION = 1


@dataclass(frozen=True)
class Configuration:
    """One thing the controller can choose for a frame."""

    split: str  # "local", "input" (full offload) or a split point
    codec: str
    width: float | None = None
    input_size: int | None = None  # local only: run the model at this input size

    @property
    def name(self) -> str:
        if self.split == LOCAL:
            return LOCAL if self.input_size is None else f"local@{self.input_size}"
        base = f"{'offload' if self.split == INPUT_SPLIT else self.split}/{self.codec}"
        return base if self.width is None else f"{base}@{self.width:g}"

    @property
    def remote(self) -> bool:
        return self.split != LOCAL


@dataclass
class ConfigProfile:
    config: Configuration
    head_ms: float  # median time on the device (the whole model for local configurations)
    head_p95_ms: float
    bytes_mean: float
    bytes_p95: float
    tail_ms: float  # decode + tail where the profile was measured
    map: float  # COCO mAP@[.5:.95] on the profiling images
    bytes_samples: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class Profile:
    model: str
    fingerprint: str
    device: dict[str, Any]
    images: int
    configs: list[ConfigProfile]

    def __getitem__(self, name: str) -> ConfigProfile:
        for entry in self.configs:
            if entry.name == name:
                return entry
        raise KeyError(f"no configuration {name!r} in the profile; have {[c.name for c in self.configs]}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.configs]

    def fastest_local(self) -> ConfigProfile:
        return min((c for c in self.configs if not c.config.remote), key=lambda c: c.head_ms)

    def scaled(self, edge_slowdown: float) -> Profile:
        """The same profile for a device ``edge_slowdown`` times slower (for experiments)."""
        configs = [
            replace(c, head_ms=c.head_ms * edge_slowdown, head_p95_ms=c.head_p95_ms * edge_slowdown)
            for c in self.configs
        ]
        device = {**self.device, "edge_slowdown": edge_slowdown}
        return Profile(self.model, self.fingerprint, device, self.images, configs)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**asdict(self), "version": PROFILE_VERSION}
        path.write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"profile {path} does not exist; create it with `splitrt profile --out {path}`")
        try:
            data = json.loads(path.read_text())
            if data.get("version") != PROFILE_VERSION:
                raise ValueError(f"profile version {data.get('version')!r}, expected {PROFILE_VERSION}")
            configs = [ConfigProfile(**{**c, "config": Configuration(**c["config"])}) for c in data["configs"]]
            return cls(data["model"], data["fingerprint"], data["device"], data["images"], configs)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a splitrt profile: {exc}") from exc


def default_configurations(model: SplitModel) -> list[Configuration]:
    """Local (full size and two cheaper input sizes), JPEG offload, and every bottleneck of the model."""
    configs = [Configuration(LOCAL, LOCAL)]
    size = _input_size(model)
    if size:
        configs += [Configuration(LOCAL, LOCAL, input_size=s) for s in (int(size * 0.75) // 16 * 16, size // 2)]
    configs += [Configuration(INPUT_SPLIT, f"jpeg:{q}") for q in (50, 75, 90)]
    for split in getattr(model, "branch_splits", []):
        branch = model.branch(split)
        if branch.slimmable:
            configs += [Configuration(split, "entropy", width=w) for w in branch.widths]
        elif branch.entropy_bottleneck is not None:
            configs.append(Configuration(split, "entropy"))
        else:
            configs.append(Configuration(split, "bottleneck-int8-zstd"))
    return configs


def _input_size(model: SplitModel) -> int | None:
    transform = getattr(getattr(model, "detector", None), "transform", None)
    return int(transform.min_size[0]) if transform is not None else None


class Runner:
    """Runs one configuration's device part and server part, so profiles and experiments time the same code."""

    def __init__(self, model: SplitModel, config: Configuration) -> None:
        self.model = model
        self.config = config
        self.codec = get_codec(config.codec, model, config.split) if config.remote else None

    def _set_width(self) -> None:
        if self.config.width is not None:
            self.model.branch(self.config.split).set_width(self.config.width)

    @torch.inference_mode()
    def device_part(self, image: torch.Tensor) -> tuple[bytes | None, Any, dict | None]:
        if not self.config.remote:
            with self.model.at_input_size(self.config.input_size):
                return None, None, self.model.full(image)
        self._set_width()
        features, meta = self.model.head(image, self.config.split)
        return self.codec.encode(features), meta, None

    @torch.inference_mode()
    def server_part(self, payload: bytes, meta: Any) -> dict:
        return self.model.tail(self.codec.decode(payload), meta, self.config.split)


def measure(
    model: SplitModel, configs: list[Configuration], dataset: Any, progress: bool = True
) -> list[ConfigProfile]:
    from ..data.evaluate import coco_map, to_coco_results

    entries = []
    for config in tqdm(configs, desc="profile", unit="config", disable=not progress):
        runner = Runner(model, config)
        head, tail, sizes, results = [], [], [], []
        for index in range(len(dataset)):
            image = dataset[index][0]
            began = time.perf_counter()
            payload, meta, out = runner.device_part(image)
            head.append((time.perf_counter() - began) * 1e3)
            if payload is not None:
                sizes.append(len(payload))
                began = time.perf_counter()
                out = runner.server_part(payload, meta)
                tail.append((time.perf_counter() - began) * 1e3)
            results += to_coco_results(dataset.image_id(index), out["boxes"], out["scores"], out["labels"])
        entries.append(
            ConfigProfile(
                config=config,
                head_ms=statistics.median(head),
                head_p95_ms=_quantile(head, 0.95),
                bytes_mean=statistics.fmean(sizes) if sizes else 0.0,
                bytes_p95=_quantile(sizes, 0.95) if sizes else 0.0,
                tail_ms=statistics.median(tail) if tail else 0.0,
                map=coco_map(dataset.coco(), results)["map"],
                bytes_samples=sizes[:200],
            )
        )
    return entries


def remeasure_heads(profile: Profile, model: SplitModel, images: list[torch.Tensor], seconds: float = 5.0) -> Profile:
    """Head times of every configuration on this device, within about ``seconds`` in total."""
    budget = seconds / max(1, len(profile.configs))
    configs = []
    for entry in profile.configs:
        runner = Runner(model, entry.config)
        runner.device_part(images[0])  # warm-up
        times = []
        deadline = time.perf_counter() + budget
        while len(times) < 3 or time.perf_counter() < deadline:
            began = time.perf_counter()
            runner.device_part(images[len(times) % len(images)])
            times.append((time.perf_counter() - began) * 1e3)
            if len(times) >= 50:
                break
        configs.append(replace(entry, head_ms=statistics.median(times), head_p95_ms=_quantile(times, 0.95)))
    device = {**device_description(), "remeasured": True}
    return Profile(profile.model, profile.fingerprint, device, profile.images, configs)


def device_description() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])
