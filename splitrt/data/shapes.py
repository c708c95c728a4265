"""A deterministic synthetic detection data set that can be generated and trained on here.

Scenes of eight object classes (geometric shapes and glyph-like polygons of
varied size, colour and rotation, partly occluding each other) on textured,
noisy backgrounds with clutter and distractor objects that belong to no
class.  About a quarter of the images hold no object of interest, which the
prefilter needs.  Every image is a pure function of (seed, split, index), so
nothing has to be stored or downloaded; ``to_coco`` writes COCO-format
annotations for any split.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..outputs import progress_bar

CLASSES = ["circle", "square", "triangle", "star", "cross", "ring", "arrow", "tee"]
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZE = 160
DEFAULT_COUNTS = {"train": 6000, "val": 400, "test": 400}
EMPTY_FRACTION = 0.25
MIN_VISIBLE = 0.4
CORED = "cored"


@dataclass(frozen=True)
class World:
    """How a synthetic world's scenes are drawn.  ``SHAPES`` is the demo world shapes_fcos trains on;
    ``DENSE`` is the harder one: larger images, twice the classes (each shape plain or with a small
    dark core, a detail a shallow model misses on small objects), objects from tiny to large, more of
    them, occluding each other more."""

    name: str
    size: int
    classes: tuple[str, ...]
    objects: tuple[int, int]  # per non-empty image, [low, high)
    radius: tuple[float, float]  # object extent as a fraction of the image side
    min_visible: float
    empty_fraction: float


@dataclass(frozen=True)
class ShapeObject:
    label: int  # 1-based index into CLASSES
    cx: float
    cy: float
    size: float  # radius-like extent in pixels
    angle: float  # radians
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    background: np.ndarray  # HxWx3 float32
    distractors: list  # (kind, params) drawn under and between objects
    objects: list[ShapeObject]


SHAPES = World("shapes", DEFAULT_SIZE, tuple(CLASSES), (1, 6), (0.06, 0.2), MIN_VISIBLE, EMPTY_FRACTION)
DENSE = World(
    "dense",
    384,
    tuple(CLASSES) + tuple(f"{name}-{CORED}" for name in CLASSES),
    (3, 16),
    (0.02, 0.22),
    0.3,
    0.1,
)
WORLDS = {w.name: w for w in (SHAPES, DENSE)}


# -- geometry ------------------------------------------------------------------------------
def _polygon(points: list[tuple[float, float]], obj: ShapeObject) -> list[tuple[float, float]]:
    """Unit-shape points scaled, rotated and moved into place."""
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    return [(obj.cx + obj.size * (x * c - y * s), obj.cy + obj.size * (x * s + y * c)) for x, y in points]


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> list[tuple[float, float]]:
    return [
        (radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


_STAR = [
    p for k in range(5) for p in (_regular(5, 1.0, -math.pi / 2)[k], _regular(5, 0.42, -math.pi / 2 + math.pi / 5)[k])
]
_CROSS = [
    (-0.3, -1),
    (0.3, -1),
    (0.3, -0.3),
    (1, -0.3),
    (1, 0.3),
    (0.3, 0.3),
    (0.3, 1),
    (-0.3, 1),
    (-0.3, 0.3),
    (-1, 0.3),
    (-1, -0.3),
    (-0.3, -0.3),
]
_ARROW = [(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)]
_TEE = [(-0.9, -0.9), (0.9, -0.9), (0.9, -0.5), (0.22, -0.5), (0.22, 0.95), (-0.22, 0.95), (-0.22, -0.5), (-0.9, -0.5)]
_SQUARE = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]


def draw_object(
    draw: ImageDraw.ImageDraw, obj: ShapeObject, fill, classes: tuple[str, ...] = SHAPES.classes
) -> None:
    name = classes[obj.label - 1]
    if name.endswith("-" + CORED):
        _draw_cored(draw, obj, fill, name.removesuffix("-" + CORED))
        return
    r = obj.size
    if name == "circle":
        draw.ellipse([obj.cx - r, obj.cy - r, obj.cx + r, obj.cy + r], fill=fill)
    elif name == "ring":
        draw.ellipse([obj.cx - r, obj.cy - r, obj.cx + r, obj.cy + r], outline=fill, width=max(2, int(r * 0.35)))
    else:
        shape = {
            "square": _SQUARE,
            "triangle": _regular(3, 1.0, -math.pi / 2),
            "star": _STAR,
            "cross": _CROSS,
            "arrow": _ARROW,
            "tee": _TEE,
        }[name]
        draw.polygon(_polygon(shape, obj), fill=fill)


def _draw_cored(draw: ImageDraw.ImageDraw, obj: ShapeObject, fill, name: str) -> None:
    """The shape with a dark core at its centre: the class differs from the solid one only in that detail."""
    draw_object(draw, replace(obj, label=CLASSES.index(name) + 1), fill)
    if fill == 255:  # drawing its mask: the core is part of the object
        return
    core = tuple(max(0, int(c * 0.2)) for c in fill)
    r = max(1.0, obj.size * 0.18)
    draw.ellipse([obj.cx - r, obj.cy - r, obj.cx + r, obj.cy + r], fill=core)


# -- scene sampling ------------------------------------------------------------------------------
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 215, 3).astype(np.float32)
    other = rng.uniform(40, 215, 3).astype(np.float32)
    kind = rng.integers(0, 3)
    if kind == 0:  # grating
        theta, freq = rng.uniform(0, math.pi), rng.uniform(3, 14)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx * math.cos(theta) + yy * math.sin(theta)))
    elif kind == 1:  # smooth blotches: upsampled noise
        coarse = rng.uniform(0, 1, (rng.integers(3, 9),) * 2).astype(np.float32)
        t = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255.0
    else:  # gradient
        t = np.clip(xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) + 0.5, 0, 1)
    image = base * (1 - t[..., None]) + other * t[..., None]
    return image + rng.normal(0, rng.uniform(3, 12), image.shape).astype(np.float32)


def _distractors(rng: np.random.Generator, size: int) -> list:
    items = []
    for _ in range(rng.integers(2, 7)):
        kind = rng.choice(["line", "blob", "ellipse", "dots"])
        color = tuple(int(v) for v in rng.uniform(0, 255, 3))
        if kind == "line":
            items.append(("line", (tuple(rng.uniform(0, size, 4)), color, int(rng.integers(1, 4)))))
        elif kind == "blob":  # an irregular polygon: no class looks like it
            cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(6, 22)
            n = int(rng.integers(5, 10))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = r * rng.uniform(0.35, 1.0, n)
            items.append(
                ("blob", ([(cx + a * math.cos(t), cy + a * math.sin(t)) for a, t in zip(radii, angles)], color))
            )
        elif kind == "ellipse":  # elongated, so never a circle
            cx, cy, a = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(8, 24)
            b = a / rng.uniform(2.2, 4.0)
            box = [cx - a, cy - b, cx + a, cy + b] if rng.integers(0, 2) else [cx - b, cy - a, cx + b, cy + a]
            items.append(("ellipse", (box, color)))
        else:
            pts = rng.uniform(0, size, (int(rng.integers(10, 40)), 2))
            items.append(("dots", ([tuple(p) for p in pts], color)))
    return items


def _objects(rng: np.random.Generator, size: int, world: World = SHAPES) -> list[ShapeObject]:
    if rng.uniform() < world.empty_fraction:
        return []
    objects = []
    for _ in range(int(rng.integers(*world.objects))):
        radius = float(rng.uniform(*world.radius) * size)
        objects.append(
            ShapeObject(
                label=int(rng.integers(1, len(world.classes) + 1)),
                cx=float(rng.uniform(radius * 0.5, size - radius * 0.5)),
                cy=float(rng.uniform(radius * 0.5, size - radius * 0.5)),
                size=radius,
                angle=float(rng.uniform(0, 2 * math.pi)),
                color=tuple(int(v) for v in rng.uniform(0, 255, 3)),
            )
        )
    return objects


def sample_scene(seed: int, split: str, index: int, size: int = DEFAULT_SIZE, world: World = SHAPES) -> Scene:
    rng = np.random.default_rng([seed, SPLITS[split], index])
    if world is not SHAPES:  # another world, other scenes (the shapes world's stay as they were)
        rng = np.random.default_rng([seed, SPLITS[split], index, sum(map(ord, world.name))])
    return Scene(_background(rng, size), _distractors(rng, size), _objects(rng, size, world))


# -- rendering ---------------------------------------------------------------------------------------
def render(scene: Scene, noise_seed: int = 0, world: World = SHAPES) -> tuple[np.ndarray, list[dict]]:
    """The image (HxWx3 uint8) and its annotations (visible boxes, xyxy, of objects visible enough)."""
    size = scene.background.shape[0]
    image = Image.fromarray(np.clip(scene.background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for kind, params in scene.distractors[: len(scene.distractors) // 2]:
        _draw_distractor(draw, kind, params)
    masks = []
    for obj in scene.objects:
        draw_object(draw, obj, obj.color, world.classes)
        mask = Image.new("L", (size, size), 0)
        draw_object(ImageDraw.Draw(mask), obj, 255, world.classes)
        masks.append(np.asarray(mask) > 0)
    for kind, params in scene.distractors[len(scene.distractors) // 2 :]:
        _draw_distractor(draw, kind, params)
    image = image.filter(ImageFilter.GaussianBlur(radius=0.6))
    pixels = np.asarray(image).astype(np.float32)
    pixels += np.random.default_rng(noise_seed).normal(0, 4, pixels.shape)
    annotations = []
    for i, (obj, mask) in enumerate(zip(scene.objects, masks)):
        total = mask.sum()
        visible = mask.copy()
        for later in masks[i + 1 :]:
            visible &= ~later
        if total == 0 or visible.sum() < world.min_visible * total:
            continue  # mostly hidden: not a fair target
        ys, xs = np.nonzero(visible)
        annotations.append(
            {"label": obj.label, "box": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]}
        )
    return np.clip(pixels, 0, 255).astype(np.uint8), annotations


def _draw_distractor(draw: ImageDraw.ImageDraw, kind: str, params) -> None:
    if kind == "line":
        coords, color, width = params
        draw.line(coords, fill=color, width=width)
    elif kind == "blob":
        draw.polygon(params[0], fill=params[1])
    elif kind == "ellipse":
        draw.ellipse(params[0], fill=params[1])
    else:
        for x, y in params[0]:
            draw.point((x, y), fill=params[1])


def sample(
    seed: int, split: str, index: int, size: int | None = None, world: World = SHAPES
) -> tuple[np.ndarray, list[dict]]:
    size = size or world.size
    return render(
        sample_scene(seed, split, index, size, world),
        noise_seed=(seed * 1_000_003 + SPLITS[split]) * 10_000_019 + index,
        world=world,
    )


def video(count: int, seed: int = 7, size: int = DEFAULT_SIZE) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """Objects that move and turn across frames over a fixed background (the edge demo streams this)."""
    rng = np.random.default_rng([seed, 99])
    scene = Scene(_background(rng, size), _distractors(rng, size), [])
    objects = [o for _ in range(3) for o in _objects(rng, size)][:4]
    velocity = [(rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-0.1, 0.1)) for _ in objects]
    for frame in range(count):
        moved = []
        for obj, (vx, vy, va) in zip(objects, velocity):
            span_x, span_y = size - 2 * obj.size, size - 2 * obj.size
            x = obj.size + _bounce(obj.cx - obj.size + vx * frame, span_x)
            y = obj.size + _bounce(obj.cy - obj.size + vy * frame, span_y)
            moved.append(replace(obj, cx=x, cy=y, angle=obj.angle + va * frame))
        yield render(replace(scene, objects=moved), noise_seed=frame)


def _bounce(position: float, span: float) -> float:
    period = 2 * span
    p = position % period
    return p if p <= span else period - p


# -- COCO export ------------------------------------------------------------------------------------------
def to_coco(seed: int, split: str, count: int, size: int = DEFAULT_SIZE) -> dict:
    """COCO-format ground truth for the first ``count`` images of a split (image id = index + 1)."""
    per_image = [sample(seed, split, index, size)[1] for index in range(count)]
    return coco_ground_truth(per_image, size, [f"{split}/{index:06d}.png" for index in range(count)])


def coco_ground_truth(
    per_image: list[list[dict]],
    size: int,
    file_names: list[str] | None = None,
    classes: tuple[str, ...] = SHAPES.classes,
) -> dict:
    """COCO-format ground truth from each image's annotations (xyxy boxes); image ids are 1-based."""
    images, annotations = [], []
    for index, anns in enumerate(per_image):
        image = {"id": index + 1, "width": size, "height": size}
        if file_names:
            image["file_name"] = file_names[index]
        images.append(image)
        for ann in anns:
            x1, y1, x2, y2 = ann["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": ann["label"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def export_coco(world: World, split: str, count: int, out, seed: int = 0, progress: bool = True):
    """Write a split as a user's COCO-format folder: ``out/images/*.png`` and ``out/annotations.json``."""
    import json
    from pathlib import Path


    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    per_image, names = [], []
    for index in progress_bar(range(count), desc=f"{world.name} {split}", unit="image", enabled=progress):
        image, annotations = sample(seed, split, index, world=world)
        name = f"{split}-{index:06d}.png"
        Image.fromarray(image).save(out / "images" / name)
        per_image.append(annotations)
        names.append(name)
    coco = coco_ground_truth(per_image, world.size, names, world.classes)
    path = out / "annotations.json"
    path.write_text(json.dumps(coco))
    return path
