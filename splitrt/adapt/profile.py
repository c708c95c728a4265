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

import csv
import json
import logging
import math
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..codecs import get_codec
from ..models import INPUT_SPLIT
from ..models.base import SplitModel
from ..outputs import progress_bar

log = logging.getLogger("splitrt.adapt")

LOCAL = "local"
PROFILE_VERSION = 1


@dataclass(frozen=True)
class Configuration:
    """One thing the controller can choose for a frame."""

    split: str  # "local", "input" (full offload) or a split point
    codec: str
    width: float | None = None
    input_size: int | None = None  # local only: run the model at this input size
    early_exit: str | None = None  # local only: the model's early exit at this cut instead of the whole model

    @property
    def name(self) -> str:
        if self.split == LOCAL:
            if self.early_exit is not None:
                return f"exit@{self.early_exit}"
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
    #: Early exits: the remote configurations whose head computes this one's input on the way, and the
    #: device time left after such a head (what a hedged frame's local result costs there).
    shares_input_with: list[str] = field(default_factory=list)
    after_shared_ms: float | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def device_ms_after(self, head: ConfigProfile) -> float:
        """Device time of this local configuration right after ``head``'s head ran on the same frame."""
        if self.after_shared_ms is not None and head.name in self.shares_input_with:
            return self.after_shared_ms
        return self.head_ms


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

    def local_configs(self) -> list[ConfigProfile]:
        return [c for c in self.configs if not c.config.remote]

    def fastest_local(self) -> ConfigProfile | None:
        """The quickest local configuration; None for a profile without any (then nothing runs locally)."""
        return min(self.local_configs(), key=lambda c: c.head_ms, default=None)

    def without(self, names: list[str]) -> Profile:
        """The same profile less some configurations (ablations: what does one of them add?)."""
        for name in names:
            self[name]  # an unknown name is an error, not a silent no-op
        configs = [c for c in self.configs if c.name not in names]
        if not configs:
            raise ValueError("that leaves the profile without any configuration")
        return Profile(self.model, self.fingerprint, self.device, self.images, configs)

    def without_kind(self, kind: str) -> Profile:
        """Ablations by kind: ``exit`` (every early exit) or ``local`` (every local configuration)."""
        if kind == "exit":
            names = [c.name for c in self.configs if c.config.early_exit is not None]
        elif kind == "local":
            names = [c.name for c in self.local_configs()]
        else:
            raise ValueError(f"unknown ablation {kind!r}: exit or local")
        return self.without(names) if names else self

    def scaled(self, edge_slowdown: float) -> Profile:
        """The same profile for a device ``edge_slowdown`` times slower (for experiments)."""
        configs = [
            replace(
                c,
                head_ms=c.head_ms * edge_slowdown,
                head_p95_ms=c.head_p95_ms * edge_slowdown,
                after_shared_ms=None if c.after_shared_ms is None else c.after_shared_ms * edge_slowdown,
            )
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
    def from_csv(cls, text: str, name: str = "csv") -> Profile:
        """Published or hand-written measurements: one row per configuration (see ``CSV_REQUIRED``)."""
        return _csv_profile(text, name)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """A profile JSON written by ``splitrt profile``, or a CSV of measurements (``from_csv``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"profile {path} does not exist; create it with `splitrt profile --out {path}`")
        if path.suffix.lower() == ".csv":
            return cls.from_csv(path.read_text(), path.name)
        try:
            data = json.loads(path.read_text())
            if data.get("version") != PROFILE_VERSION:
                raise ValueError(f"profile version {data.get('version')!r}, expected {PROFILE_VERSION}")
            configs = [ConfigProfile(**{**c, "config": Configuration(**c["config"])}) for c in data["configs"]]
            return cls(data["model"], data["fingerprint"], data["device"], data["images"], configs)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a splitrt profile: {exc}") from exc


def log_spread(entry: ConfigProfile) -> float:
    """The lognormal sigma that puts a configuration's p95 device time at the 95th percentile (capped at 0.5)."""
    if entry.head_ms <= 0 or entry.head_p95_ms <= entry.head_ms:
        return 0.0
    return min(0.5, math.log(entry.head_p95_ms / entry.head_ms) / 1.645)


#: Columns of a CSV profile: the required ones, then those with defaults.
CSV_REQUIRED = ("configuration", "head_ms", "tail_ms", "bytes", "map")
CSV_OPTIONAL = ("head_p95_ms", "bytes_p95", "after_shared_ms", "shares_input_with")


#: Other names a published table gives a column (after `_column`'s normalisation).
CSV_ALIASES = {"accuracy": "map", "acc": "map", "map_pct": "map", "payload_bytes": "bytes"}


def _column(header: str) -> str:
    """A header as this schema names it: "Head (ms)", "head ms" and "head_ms" are one column; so are
    "mAP", "accuracy" and "map".  Another unit ("Head (s)") stays in the name: a missing column, not
    a silent factor of 1000."""
    key = re.sub(r"[^a-z0-9]+", "_", header.strip().lower()).strip("_")
    return CSV_ALIASES.get(key, key)


def _csv_profile(text: str, name: str) -> Profile:
    lines = [line for line in text.lstrip("\ufeff").splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.DictReader(lines)
    columns = [_column(c) for c in reader.fieldnames or [] if c and c.strip()]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise ValueError(f"{name}: column(s) {', '.join(twice)} given twice (headers are matched loosely)")
    rows = [{_column(k): v for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise ValueError(f"{name}: no rows (expected a header {','.join(CSV_REQUIRED)} and one row per configuration)")
    missing = [c for c in CSV_REQUIRED if c not in rows[0]]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}; required: {', '.join(CSV_REQUIRED)}")
    # Accuracy as a fraction (0.213) or in percent (21.3): the controller's margins are in mAP points,
    # and read as fractions every configuration would look worth less than the least gain it acts on.
    try:
        accuracies = [float(row["map"]) for row in rows]
    except (TypeError, ValueError):
        accuracies = []
    scale = 100.0 if accuracies and max(accuracies) <= 1.0 else 1.0
    if scale != 1.0:
        log.warning("%s: every accuracy is at most 1: read as fractions and scaled to percent", name)
    configs = []
    for number, row in enumerate(rows, 2):
        try:
            config = parse_configuration((row["configuration"] or "").strip())
            # A local configuration sends nothing: its bytes and tail may be left blank.
            head = float(row["head_ms"])
            nbytes = float(row["bytes"]) if config.remote or (row["bytes"] or "").strip() else 0.0
            after = (row.get("after_shared_ms") or "").strip()
            entry = ConfigProfile(
                config=config,
                head_ms=head,
                head_p95_ms=float(row.get("head_p95_ms") or head),
                bytes_mean=nbytes if config.remote else 0.0,
                bytes_p95=float(row.get("bytes_p95") or nbytes) if config.remote else 0.0,
                tail_ms=float(row["tail_ms"]) if config.remote else 0.0,
                map=float(row["map"]) * scale,
                shares_input_with=[s for s in (row.get("shares_input_with") or "").split(";") if s],
                after_shared_ms=float(after) if after else None,
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}:{number}: {exc}") from None
        if min(entry.head_ms, entry.tail_ms, entry.bytes_mean) < 0:
            raise ValueError(f"{name}:{number}: times and bytes cannot be negative")
        configs.append(entry)
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: a configuration appears twice")
    device = {"source": "csv", "file": name, **({"map_scaled_from_fraction": True} if scale != 1.0 else {})}
    return Profile(Path(name).stem, "csv", device, 0, configs)


def parse_configuration(name: str) -> Configuration:
    """The inverse of ``Configuration.name``: local, local@SIZE, exit@CUT, offload/CODEC, SPLIT/CODEC[@WIDTH]."""
    if name == LOCAL:
        return Configuration(LOCAL, LOCAL)
    if name.startswith("local@"):
        return Configuration(LOCAL, LOCAL, input_size=int(name.split("@", 1)[1]))
    if name.startswith("exit@"):
        return Configuration(LOCAL, LOCAL, early_exit=name.split("@", 1)[1])
    if "/" not in name:
        raise ValueError(f"configuration {name!r}: expected local, local@SIZE, exit@CUT or SPLIT/CODEC[@WIDTH]")
    split, codec = name.rsplit("/", 1)
    width = None
    if "@" in codec:
        codec, text = codec.rsplit("@", 1)
        width = float(text)
    return Configuration(INPUT_SPLIT if split == "offload" else split, codec, width)


def default_configurations(model: SplitModel) -> list[Configuration]:
    """Local (full size, two cheaper input sizes, the early exit), JPEG offload, and every bottleneck."""
    configs = [Configuration(LOCAL, LOCAL)]
    size = _input_size(model)
    if size:
        configs += [Configuration(LOCAL, LOCAL, input_size=s) for s in (int(size * 0.75) // 16 * 16, size // 2)]
    early_exit = getattr(model, "early_exit", None)
    if early_exit is not None:
        configs.append(Configuration(LOCAL, LOCAL, early_exit=early_exit.cut))
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
            return None, None, run_local(self.model, self.config, image)
        self._set_width()
        features, meta = self.model.head(image, self.config.split)
        return self.codec.encode(features), meta, None

    @torch.inference_mode()
    def server_part(self, payload: bytes, meta: Any) -> dict:
        return self.model.tail(self.codec.decode(payload), meta, self.config.split)


def run_local(model: SplitModel, config: Configuration, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """A local configuration's detections for one image: the early exit, or the whole model at its size."""
    if config.early_exit is not None:
        return model.exit_detect(image)
    with model.at_input_size(config.input_size):
        return model.full(image)


def sharing_heads(model: SplitModel, config: Configuration, configs: list[Configuration]) -> list[Configuration]:
    """The remote configurations whose head passes through ``config``'s early-exit input."""
    if config.early_exit is None:
        return []
    return [c for c in configs if c.remote and model.shares_cut(c.split, config.early_exit)]


@torch.inference_mode()
def time_after_shared(model: SplitModel, config: Configuration, images: list[torch.Tensor]) -> list[float]:
    """Milliseconds of the early exit alone, from the tensor a sharing head has already computed."""
    times = []
    cut = model.teacher_prefix(config.early_exit)
    for image in images:
        batch, meta = model.preprocess(image)
        cut_features = cut(batch)
        began = time.perf_counter()
        model.exit_from_cut(cut_features, meta)
        times.append((time.perf_counter() - began) * 1e3)
    return times


def measure(
    model: SplitModel, configs: list[Configuration], dataset: Any, progress: bool = True
) -> list[ConfigProfile]:
    from ..data.evaluate import coco_map, to_coco_results

    entries = []
    images = [dataset[index][0] for index in range(len(dataset))]  # rendered once for every configuration
    for config in progress_bar(configs, desc="profile", unit="config", enabled=progress):
        runner = Runner(model, config)
        head, tail, sizes, results = [], [], [], []
        for index, image in enumerate(images):
            began = time.perf_counter()
            payload, meta, out = runner.device_part(image)
            head.append((time.perf_counter() - began) * 1e3)
            if payload is not None:
                sizes.append(len(payload))
                began = time.perf_counter()
                out = runner.server_part(payload, meta)
                tail.append((time.perf_counter() - began) * 1e3)
            results += to_coco_results(dataset.image_id(index), out["boxes"], out["scores"], out["labels"])
        shared = sharing_heads(model, config, configs)
        after = time_after_shared(model, config, images) if shared else []
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
                shares_input_with=[c.name for c in shared],
                after_shared_ms=statistics.median(after) if after else None,
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
        after = entry.after_shared_ms
        if after is not None:
            after = statistics.median(time_after_shared(model, entry.config, images * 3))
        configs.append(
            replace(entry, head_ms=statistics.median(times), head_p95_ms=_quantile(times, 0.95), after_shared_ms=after)
        )
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
