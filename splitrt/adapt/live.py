"""`splitrt simulate --live-seconds N`: the same experiment with real processes, to check the simulator.

Measures a profile with one compute thread, starts ``splitrt-server``, a
``splitrt channel`` proxy replaying the trace and an adaptive
``splitrt-edge`` (one thread each: they share this machine) with the same
deadline, frame rate and emulated device speed, then runs the simulator
with that profile over the same stretch of trace and compares the deadline
hit rates.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..channel.traces import Trace
from ..launch import ServerProcess, free_port
from .profile import Profile
from .simulate import Scenario, Simulator


def run_live(
    trace_path: str,
    deadline_ms: float,
    fps: float,
    seconds: float,
    rtt_ms: float,
    edge_slowdown: float,
    out_dir: Path,
) -> dict[str, Any]:
    # Edge, server and proxy share this machine: one compute thread each, and a profile measured
    # the same way, so the simulator and the live run describe the same device.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    live_profile = out_dir / "live-profile.json"
    subprocess.run(
        [sys.executable, "-m", "splitrt", "profile", "--images", "20", "--out", str(live_profile)],
        env=env,
        check=True,
        capture_output=True,
    )
    profile_path = str(live_profile)
    proxy_port = free_port()
    frames = int(seconds * fps)
    jsonl = out_dir / f"live-{Path(trace_path).name.replace('.', '_')}.jsonl"
    logs = Path(tempfile.mkdtemp(prefix="splitrt-live-"))
    server = ServerProcess(["--model", "shapes_fcos"], log=logs / "server.log", env=env)
    server_address = server.address
    proxy = None
    try:
        server.wait_serving()
        proxy = subprocess.Popen(
            [
                sys.executable, "-m", "splitrt", "channel", "--trace", trace_path,
                "--listen", f"127.0.0.1:{proxy_port}", "--upstream", server_address, "--delay-ms", str(rtt_ms / 2),
            ],
            stdout=(logs / "proxy.log").open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        time.sleep(1.0)
        edge = subprocess.run(
            [
                sys.executable, "-m", "splitrt.edge.cli", f"shapes-video:{frames}",
                "--server", f"127.0.0.1:{proxy_port}", "--model", "shapes_fcos", "--controller", "adaptive",
                "--profile", profile_path, "--deadline-ms", str(deadline_ms), "--fps", str(fps),
                "--emulate-slowdown", str(edge_slowdown), "--out", str(jsonl), "--quiet",
            ],
            capture_output=True,
            text=True,
            env=env,
        )  # fmt: skip
        if edge.returncode not in (0, 1):
            raise RuntimeError(f"splitrt-edge failed ({edge.returncode}): {edge.stderr[-2000:]}")
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proxy.kill()
        server.stop(grace_s=20)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    live_hits = sum(1 for line in lines if line.get("deadline_met")) / max(1, len(lines))
    profile = Profile.load(profile_path).scaled(edge_slowdown)
    trace = Trace.load(trace_path)
    nominal = Scenario(profile, trace, deadline_ms, fps=fps, seconds=seconds, base_rtt_ms=rtt_ms)
    simulated = Simulator(nominal).run("adaptive").summary(deadline_ms)
    # The same, told what the live edge measured about itself and the path: its device was slower
    # than profiled (edge, server and proxy share two cores) and loopback + proxy add RTT.
    device_load = statistics.median(line["estimates"]["device_load"] for line in lines[len(lines) // 10 :])
    live_rtt = statistics.median(line["estimates"]["rtt_ms"] for line in lines if line["estimates"]["rtt_ms"] > 0)
    measured = Scenario(
        profile, trace, deadline_ms, fps=fps, seconds=seconds, base_rtt_ms=live_rtt, load=lambda t: device_load
    )
    calibrated = Simulator(measured).run("adaptive").summary(deadline_ms)
    live_modes: dict[str, int] = {}
    for line in lines:
        live_modes[line["mode"]] = live_modes.get(line["mode"], 0) + 1
    return {
        "trace": Path(trace_path).name,
        "seconds": seconds,
        "frames_live": len(lines),
        "live_hit_rate": live_hits,
        "simulated_hit_rate": simulated["hit_rate"],
        "difference": live_hits - simulated["hit_rate"],
        "live_device_load": device_load,
        "live_rtt_ms": live_rtt,
        "simulated_with_live_load_hit_rate": calibrated["hit_rate"],
        "difference_with_live_load": live_hits - calibrated["hit_rate"],
        "live_modes": live_modes,
        "live_mean_latency_ms": sum(line["latency_ms"] for line in lines) / max(1, len(lines)),
        "simulated_mean_latency_ms": simulated["mean_latency_ms"],
        "simulated_with_live_load_mean_latency_ms": calibrated["mean_latency_ms"],
        "jsonl": str(jsonl),
    }
