"""`splitrt bench load`: N concurrent edges (separate processes) streaming to one server.

Reports throughput, p50/p99 round-trip latency, errors, lost frames and the
server's resident memory (peak, and growth from the first to the last
quarter of the run).  Each edge replays one pre-encoded frame, so the
measurement is the server and the wire, not the edges' heads.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from ..codecs import get_codec
from ..data.datasets import to_tensor
from ..data.shapes import sample
from ..models import build_model
from ..server.readiness import wait_serving
from ..wire.protocol import build_request


def encoded_request(model_name: str, split: str, codec: str) -> bytes:
    model = build_model(model_name)
    image = to_tensor(sample(0, "test", 1)[0])
    with torch.inference_mode():
        features, meta = model.head(image, split)
    payload = get_codec(codec, model, split).encode(features)
    return build_request(model_name, 0, payload, codec, split, meta, model.fingerprint()).SerializeToString()


class MemorySampler:
    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.process.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(self.every_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self, since: float) -> dict[str, float]:
        run = [rss for t, rss in self.samples if t >= since] or [rss for _, rss in self.samples]
        quarter = max(1, len(run) // 4)
        first, last = statistics.fmean(run[:quarter]), statistics.fmean(run[-quarter:])
        return {"peak_rss_mb": max(run) / 2**20, "rss_growth_pct": 100 * (last - first) / first}


def run_level(target: str, server_pid: int, request: Path, clients: int, seconds: float, work: Path) -> dict[str, Any]:
    level = work / f"n{clients}"
    level.mkdir(parents=True)
    procs = []
    for i in range(clients):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "splitrt.bench.load_client",
                    "--server",
                    target,
                    "--request",
                    str(request),
                    "--seconds",
                    str(seconds),
                    "--go",
                    str(level / "go"),
                    "--ready",
                    str(level / f"ready{i}"),
                    "--out",
                    str(level / f"client{i}.json"),
                ]
            )
        )
    deadline = time.monotonic() + 120
    while sum((level / f"ready{i}").exists() for i in range(clients)) < clients:
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
            raise RuntimeError(f"load clients did not start ({clients} requested)")
        time.sleep(0.05)
    start_at = time.time() + 0.5
    with MemorySampler(server_pid) as memory:
        window = time.monotonic() + 0.5
        (level / "go").write_text(str(start_at))
        for p in procs:
            p.wait(timeout=seconds + 120)
    results = [json.loads((level / f"client{i}.json").read_text()) for i in range(clients)]
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    errors = [e for r in results for e in r["errors"]]
    return {
        "clients": clients,
        "seconds": seconds,
        "frames": len(latencies),
        "throughput_fps": len(latencies) / seconds,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "errors": len(errors),
        "error_examples": errors[:3],
        "lost": sum(r["unanswered"] for r in results),
        **memory.summary(window),
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def _start_server(model: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    from ..cli import free_port

    port = free_port()
    command = [sys.executable, "-m", "splitrt.server.app", "--port", str(port), "--model", model]
    command += ["--max-rate", "0", "--log-level", "WARNING", *extra]
    return subprocess.Popen(command), f"127.0.0.1:{port}"


def run(
    levels: list[int], seconds: float, model: str, split: str, codec: str, max_batch: int = 1, delay_ms: float = 5.0
) -> dict[str, Any]:
    """Each level against each server; with ``max_batch`` > 1 a batching server runs beside an unbatched one."""
    variants = {"off": []}
    if max_batch > 1:
        variants["on"] = ["--max-batch", str(max_batch), "--batch-delay-ms", str(delay_ms)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        request = work / "request.bin"
        request.write_bytes(encoded_request(model, split, codec))
        servers = {label: _start_server(model, extra) for label, extra in variants.items()}
        try:
            for server, target in servers.values():
                wait_serving(target, server)
            rows = []
            for n in levels:  # side by side: the two servers take turns at each level
                for label, (server, target) in servers.items():
                    row = run_level(target, server.pid, request, n, seconds, work / label)
                    rows.append({"batching": label, **row})
        finally:
            for server, _ in servers.values():
                server.terminate()
                server.wait(timeout=30)
    return {
        "benchmark": "load",
        "model": model,
        "split": split,
        "codec": codec,
        "max_batch": max_batch,
        "batch_delay_ms": delay_ms,
        "rows": rows,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"bench load: {result['model']} split {result['split']} codec {result['codec']}; each edge is its own process",
        f"batching: up to {result['max_batch']} frames, {result['batch_delay_ms']:g} ms delay"
        if result["max_batch"] > 1
        else "batching: off",
        f"{'batch':>5} {'clients':>7} {'frames/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'lost':>5} "
        f"{'peak RSS MB':>11} {'RSS growth':>10}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['batching']:>5} {r['clients']:>7} {r['throughput_fps']:>9.1f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['errors']:>6} {r['lost']:>5} {r['peak_rss_mb']:>11.0f} "
            f"{r['rss_growth_pct']:>9.1f}%"
        )
    return "\n".join(lines)


def main(
    levels: list[int],
    seconds: float,
    model: str,
    split: str,
    codec: str,
    out: Path,
    max_batch: int = 1,
    delay_ms: float = 5.0,
) -> int:
    result = run(levels, seconds, model, split, codec, max_batch, delay_ms)
    print(format_table(result))
    on = {r["clients"]: r for r in result["rows"] if r["batching"] == "on"}
    for r in result["rows"]:
        if r["batching"] == "off" and r["clients"] in on:
            b = on[r["clients"]]
            print(
                f"{r['clients']} clients: batching gives {b['throughput_fps'] / r['throughput_fps']:.2f}x "
                f"the throughput, p99 {b['p99_ms']:.0f} vs {r['p99_ms']:.0f} ms"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    bad = [r for r in result["rows"] if r["errors"] or r["lost"]]
    return 1 if bad else 0
