"""Where frames come from: image files, folders, videos, cameras, or a synthetic scene."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}


class SourceError(ValueError):
    """A frame source that cannot be opened or read."""


def open_source(spec: str, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Frames as HxWx3 uint8 RGB arrays.

    ``spec`` is ``synthetic:N`` (a moving-objects video of N frames),
    ``shapes-video:N`` (the shapes data set's video mode, what the demo model
    was trained for), a camera
    index (``0``), an image file, a folder of images, or a video file.
    """
    frames = _frames(spec)
    for index, frame in enumerate(frames):
        if max_frames is not None and index >= max_frames:
            return
        yield frame


def paced(frames: Iterator[np.ndarray], fps: float) -> Iterator[np.ndarray]:
    """Release frames no faster than ``fps``, as a camera would (files and synthetic sources are instant)."""
    import time

    start = time.monotonic()
    for index, frame in enumerate(frames):
        delay = start + index / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield frame


def _frames(spec: str) -> Iterator[np.ndarray]:
    if spec.startswith("shapes-video:"):
        count = spec.partition(":")[2]
        if not count.isdigit() or int(count) < 1:
            raise SourceError(f"shapes-video source needs a positive frame count, e.g. shapes-video:30 (got {spec!r})")
        from ..data import shapes

        return (frame for frame, _ in shapes.video(int(count)))
    if spec.startswith("synthetic:"):
        count = spec.partition(":")[2]
        if not count.isdigit() or int(count) < 1:
            raise SourceError(f"synthetic source needs a positive frame count, e.g. synthetic:30 (got {spec!r})")
        return synthetic_video(int(count))
    if spec.isdigit():
        return camera_frames(int(spec))
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"source {spec!r} does not exist (expected a file, folder, camera index or synthetic:N)")
    if path.is_dir():
        return folder_frames(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return iter([read_image(path)])
    if suffix in VIDEO_SUFFIXES:
        return video_frames(path)
    raise SourceError(f"cannot tell what {spec!r} is from its suffix {suffix!r}; use an image or video file")


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:
        raise SourceError(f"could not read image {path}: {exc}") from exc


def folder_frames(folder: Path) -> Iterator[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for path in files:
        yield read_image(path)


def video_frames(path: Path) -> Iterator[np.ndarray]:
    from ..extras import MissingExtra, require

    try:
        av = require("av", "video", f"reading the video {path}")
    except MissingExtra as exc:
        raise SourceError(str(exc)) from exc

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise SourceError(f"could not open video {path}: {exc}") from exc
    with container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def camera_frames(index: int) -> Iterator[np.ndarray]:
    try:
        import cv2
    except ImportError as exc:
        raise SourceError("camera sources need OpenCV: pip install 'splitrt[camera]'") from exc
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise SourceError(f"camera {index} could not be opened")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def synthetic_video(count: int, height: int = 240, width: int = 320, seed: int = 0) -> Iterator[np.ndarray]:
    """A deterministic clip of coloured shapes moving over a textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = (
        110
        + 40 * np.sin(xx / 17.0)[..., None] * np.array([1.0, 0.6, 0.3])
        + 30 * np.cos(yy / 11.0)[..., None] * np.array([0.2, 0.7, 1.0])
        + rng.normal(0, 8, (height, width, 3))
    )
    objects = [
        {
            "pos": rng.uniform([20, 20], [height - 20, width - 20]),
            "vel": rng.uniform(-6, 6, 2),
            "size": rng.uniform(12, 36),
            "color": rng.uniform(0, 255, 3),
            "round": bool(rng.integers(0, 2)),
        }
        for _ in range(4)
    ]
    for _ in range(count):
        frame = background.copy()
        for obj in objects:
            cy, cx = obj["pos"]
            r = obj["size"]
            if obj["round"]:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            else:
                mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r * 0.7)
            frame[mask] = obj["color"]
            obj["pos"] = obj["pos"] + obj["vel"]
            for axis, limit in ((0, height), (1, width)):
                if not r <= obj["pos"][axis] <= limit - r:
                    obj["vel"][axis] *= -1
        yield np.clip(frame, 0, 255).astype(np.uint8)
