"""Frame sources: synthetic video, image files, folders, video files, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from splitrt.edge.sources import SourceError, open_source, synthetic_video


def test_synthetic_video_is_deterministic_and_moves():
    a = list(open_source("synthetic:3"))
    b = list(synthetic_video(3))
    assert len(a) == 3 and all(x.shape == (240, 320, 3) and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])


def test_max_frames_limits_the_source():
    assert len(list(open_source("synthetic:10", max_frames=4))) == 4


def test_image_file_and_folder(tmp_path):
    frames = list(synthetic_video(2, height=40, width=60))
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert np.array_equal(next(open_source(str(tmp_path / "0.png"))), frames[0])
    loaded = list(open_source(str(tmp_path)))
    assert len(loaded) == 2 and np.array_equal(loaded[1], frames[1])


def test_video_file(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in synthetic_video(5, height=48, width=64):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = list(open_source(str(path)))
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)


@pytest.mark.parametrize(
    "spec,message",
    [("synthetic:0", "positive"), ("synthetic:x", "positive"), ("/nonexistent/clip.mp4", "does not exist")],
)
def test_bad_sources_say_what_is_wrong(spec, message):
    with pytest.raises(SourceError, match=message):
        list(open_source(spec))


def test_empty_folder_and_unreadable_image(tmp_path):
    with pytest.raises(SourceError, match="holds no images"):
        list(open_source(str(tmp_path)))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(SourceError, match="could not read image"):
        list(open_source(str(broken)))
