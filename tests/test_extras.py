"""A lean device install: the base requirements and the edge's imports leave out plots, COCO and video."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys


def test_the_base_install_needs_none_of_the_optional_libraries():
    requires = importlib.metadata.requires("splitrt") or []
    base = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    assert not base & {"matplotlib", "pycocotools", "av", "opencv-python-headless"}, base
    extras = importlib.metadata.metadata("splitrt").get_all("Provides-Extra")
    assert {"edge", "video", "camera", "train", "plots", "all", "dev"} <= set(extras)


def test_the_edge_and_server_run_without_them():
    """Importing and starting the edge CLI, the client and the server loads none of the optional libraries,
    and a video source without PyAV names the extra to install."""
    code = (
        "import sys\n"
        "for name in ('matplotlib', 'pycocotools', 'av', 'cv2'): sys.modules[name] = None  # not installed\n"
        "import splitrt, splitrt.edge.cli, splitrt.edge.aio, splitrt.server.app\n"
        "from splitrt.edge.sources import SourceError, video_frames\n"
        "from pathlib import Path\n"
        "try:\n"
        "    next(video_frames(Path('clip.mp4')))\n"
        "except SourceError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install 'splitrt[video]'" in done.stdout


def test_a_plot_without_matplotlib_is_skipped_with_the_reason(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from splitrt.extras import optional_plot, pyplot\n"
        "print(optional_plot(lambda: pyplot()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no plot: drawing plots needs matplotlib: pip install 'splitrt[plots]'" in done.stdout
