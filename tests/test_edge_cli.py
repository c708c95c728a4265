"""`splitrt-edge` as a user runs it: defaults that work, output that survives a failed run, clean stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

EDGE = [sys.executable, "-m", "splitrt.edge.cli"]
SHAPES = ("--model", "shapes=shapes_fcos")  # the test server serves shapes_fcos as "shapes"


def run_edge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGE, *args], capture_output=True, text=True, timeout=timeout)


def test_defaults_serve_the_shipped_model_at_its_bottleneck(server, tmp_path):
    """No --split or --codec: shapes_fcos at its entropy-coded bottleneck, under 2 kB a frame."""
    out = tmp_path / "edge.jsonl"
    done = run_edge("shapes-video:4", "--server", server.address, *SHAPES, "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["split"] for r in lines] == ["features.6/eb2"] * 4 and {r["codec"] for r in lines} == {"entropy"}
    assert all(0 < r["bytes"] < 2000 for r in lines)
    assert sum(len(r["detections"]) for r in lines) > 0
    assert "untrained" not in done.stderr


def test_a_run_that_fails_leaves_earlier_results_alone(server, tmp_path):
    out = tmp_path / "edge.jsonl"
    out.write_text('{"frame": 0, "earlier": true}\n')
    started = time.monotonic()
    # The server does not serve this model: NOT_FOUND at once, not a wait until --wait-ready runs out.
    done = run_edge("shapes-video:3", "--server", server.address, "--model", "elsewhere=shapes_fcos", "--out", str(out))
    assert done.returncode == 3 and time.monotonic() - started < 60
    assert "does not serve model 'elsewhere'" in done.stderr and "left as it was" in done.stderr
    assert out.read_text() == '{"frame": 0, "earlier": true}\n'
    # a run with results keeps the one before it as .prev
    done = run_edge("shapes-video:2", "--server", server.address, *SHAPES, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 2
    assert (tmp_path / "edge.jsonl.prev").read_text() == '{"frame": 0, "earlier": true}\n'


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_edge_with_its_summary(server, tmp_path, signum):
    out = tmp_path / "edge.jsonl"
    proc = subprocess.Popen(
        [*EDGE, "shapes-video:400", "--server", server.address, *SHAPES, "--fps", "10", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _lines(out) < 3:
        time.sleep(0.2)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert f"stopped by {signal.Signals(signum).name} after" in stdout and "frames:" in stdout
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) >= 3 and [r["frame"] for r in written] == list(range(len(written)))


def test_piped_output_has_no_progress_bar_control_characters(server, tmp_path):
    done = run_edge("shapes-video:3", "--server", server.address, *SHAPES, "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr and "\x1b" not in done.stdout + done.stderr
    assert "frames: 3  answered: 3  errors: 0" in done.stdout


def _lines(out) -> int:
    try:
        return len(out.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_a_profile_timed_on_a_loaded_machine_is_named_and_corrected(server, tmp_path):
    from splitrt.adapt.profile import Profile
    from splitrt.defaults import PROFILES_DIR

    loaded = tmp_path / "loaded.json"
    Profile.load(PROFILES_DIR / "shapes_fcos.json").scaled(6.0).save(loaded)  # every device time 6x
    out = tmp_path / "edge.jsonl"
    done = run_edge(
        "shapes-video:6", "--server", server.address, *SHAPES, "--controller", "adaptive", "--profile", str(loaded),
        "--deadline-ms", "250", "--remeasure-s", "1", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "head times" in done.stderr and "slower (loaded?)" in done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["deadline_met"] for r in lines) >= 4  # the re-measured heads fit the deadline again
    table = done.stdout
    assert "deadline of 250 ms met:" in table
