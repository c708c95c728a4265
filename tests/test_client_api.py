"""The Python client as a detection pipeline uses it: thresholds, class names, drawing, asyncio, errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

import splitrt
from splitrt.data.shapes import CLASSES
from splitrt.edge.frames import FrameFailed
from splitrt.edge.sources import open_source

SHAPES = "shapes=shapes_fcos"  # the test server serves shapes_fcos as "shapes"


def shapes_frames(n: int) -> list[np.ndarray]:
    return list(open_source(f"shapes-video:{n}", n))


def test_score_threshold_and_class_names(server):
    image = shapes_frames(1)[0]
    with splitrt.connect(server.address, SHAPES) as everything, splitrt.connect(
        server.address, SHAPES, score_threshold=0.5
    ) as confident:
        all_of_them, kept = everything.detect(image), confident.detect(image)
    assert kept.ok and all_of_them.num_detections > kept.num_detections > 0
    assert (kept.scores >= 0.5).all()
    np.testing.assert_allclose(kept.boxes, all_of_them.boxes[all_of_them.scores >= 0.5], atol=1e-4)
    assert everything.class_names == ("__background__", *CLASSES)
    assert kept.names == [CLASSES[int(label) - 1] for label in kept.labels]
    assert all("name" in d for d in kept.to_json()["detections"])


def test_draw_returns_the_image_with_its_boxes(server):
    image = shapes_frames(1)[0]
    with splitrt.connect(server.address, SHAPES, score_threshold=0.5) as client:
        result = client.detect(image)
    drawn = result.draw(image)
    assert isinstance(drawn, Image.Image) and drawn.size == (image.shape[1], image.shape[0])
    changed = np.any(np.asarray(drawn) != image, axis=2)
    x0, y0, x1, y1 = (int(round(v)) for v in result.boxes[0])
    assert changed[min(y0, image.shape[0] - 1), x0:x1].mean() > 0.5  # the box's top edge is drawn


def test_the_asyncio_client_gives_the_sync_clients_results(server):
    frames = shapes_frames(5)
    with splitrt.connect(server.address, SHAPES, score_threshold=0.3) as client:
        expected = list(client.stream(frames))

    async def run() -> tuple[list, object]:
        async with splitrt.connect_async(server.address, SHAPES, score_threshold=0.3, max_in_flight=3) as client:
            await client.wait_ready(30)
            streamed = [r async for r in client.stream(frames)]
            one = await client.detect(frames[0])
        return streamed, one

    streamed, one = asyncio.run(run())
    assert [r.frame_id for r in streamed] == list(range(5)) and all(r.mode == "split" for r in streamed)
    for got, want in zip(streamed, expected):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
        assert got.names == want.names
    np.testing.assert_allclose(one.boxes, expected[0].boxes, atol=1e-4)


def test_one_error_model_for_detect_stream_and_asyncio():
    """A frame that cannot be served is a result with mode "error" from every API, never an exception."""
    image = shapes_frames(1)[0]
    with splitrt.connect("127.0.0.1:1", SHAPES, on_failure="drop", timeout_s=5, max_resends=0) as client:
        one = client.detect(image)
        streamed = list(client.stream([image, image]))

    async def run():
        async with splitrt.connect_async("127.0.0.1:1", SHAPES, on_failure="drop", timeout_s=5) as client:
            return await client.detect(image), [r async for r in client.stream([image])]

    async_one, async_streamed = asyncio.run(run())
    for result in [one, *streamed, async_one, *async_streamed]:
        assert result.mode == "error" and not result.ok and "UNAVAILABLE" in result.error
        with pytest.raises(FrameFailed):
            result.raise_for_error()
    with pytest.raises(ValueError, match="has no split"):  # a wrong setting still raises, at once
        splitrt.connect("127.0.0.1:1", SHAPES, split="features.99")
