"""kill -9 the server mid-stream, restart it: every frame is reported exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from .conftest import TINY_CLASSIFIER_TOML as CONFIG
from .conftest import free_port, start_server, stop_server

FRAMES = 120


def test_kill_and_restart_loses_no_frame(tmp_path):
    (tmp_path / "models.toml").write_text(CONFIG)
    port = free_port()
    server = start_server(tmp_path / "models.toml", tmp_path / "server.log", port=port)
    out = tmp_path / "edge.jsonl"
    edge = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "splitrt.edge.cli",
            f"synthetic:{FRAMES}",
            "--server",
            f"127.0.0.1:{port}",
            "--model",
            "cls=resnet18",
            "--model-option",
            "num_classes=10",
            "--model-option",
            "image_size=64",
            "--split",
            "layer1",
            "--codec",
            "int8-zstd",
            "--fps",
            "10",
            "--timeout",
            "5",
            "--out",
            str(out),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (not out.exists() or len(out.read_text().splitlines()) < 15) and time.monotonic() < deadline:
            time.sleep(0.1)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        killed_at = len(out.read_text().splitlines())
        server = start_server(tmp_path / "models.toml", tmp_path / "server.log", port=port)
        stdout, stderr = edge.communicate(timeout=120)
    finally:
        edge.kill()
        code = stop_server(server)
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["frame"] for r in records]
    assert sorted(ids) == list(range(FRAMES)) and len(ids) == FRAMES, "every frame exactly once"
    for r in records:
        assert r["mode"] in ("split", "fallback", "error"), r
        if r["mode"] == "error":
            assert r["error"], "a dropped frame carries its reason"
        if r["mode"] == "fallback":
            assert "ran on the device" in r["note"]
    assert any(r["mode"] == "fallback" or "attempts" in (r.get("note") or "") for r in records), "the outage is visible"
    assert any(r["mode"] == "split" and r["frame"] > killed_at for r in records), "the edge reconnected"
    assert "reconnects" in stdout and edge.returncode == 0, stderr
