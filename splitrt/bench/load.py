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
from ..launch import ServerProcess
from ..models import build_model
from ..stats import percentile
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
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": len(errors),
        "error_examples": errors[:3],
        "lost": sum(r["unanswered"] for r in results),
        **memory.summary(window),
    }


def run(
    levels: list[int],
    seconds: float,
    model: str,
    split: str,
    codec: str,
    max_batch: int = 1,
    delay_ms: float = 5.0,
    instances: list[int] | None = None,
) -> dict[str, Any]:
    """Each level against each server variant, side by side: one server per ``instances`` count
    (unbatched), and with ``max_batch`` > 1 a batching server beside them."""
    variants = {f"x{n}": ["--instances", str(n)] for n in instances or [1]}
    if max_batch > 1:
        variants["batch"] = ["--max-batch", str(max_batch), "--batch-delay-ms", str(delay_ms)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        request = work / "request.bin"
        request.write_bytes(encoded_request(model, split, codec))
        # Every load client connects from 127.0.0.1, which the server counts as one client: its
        # per-client queue limit would otherwise refuse most frames of N clients sharing one address.
        base = ["--model", model, "--max-rate", "0", "--max-queue-per-client", "1024", "--max-queue", "1024"]
        base += ["--max-queued-total", "2048", "--log-level", "WARNING"]
        servers = {
            label: ServerProcess([*base, *extra], log=work / f"{label}.log") for label, extra in variants.items()
        }
        try:
            for server in servers.values():
                server.wait_serving()
            rows = []
            for n in levels:  # side by side: the servers take turns at each level
                for label, server in servers.items():
                    row = run_level(server.address, server.pid, request, n, seconds, work / label)
                    rows.append({"server": label, **row})
        finally:
            for server in servers.values():
                server.stop()
    return {
        "benchmark": "load",
        "model": model,
        "split": split,
        "codec": codec,
        "instances": instances or [1],
        "max_batch": max_batch,
        "batch_delay_ms": delay_ms,
        "rows": rows,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"bench load: {result['model']} split {result['split']} codec {result['codec']}; each edge is its own process",
        "server: xN = N tail instances, unbatched"
        + (
            f"; batch = up to {result['max_batch']} frames, {result['batch_delay_ms']:g} ms delay"
            if result["max_batch"] > 1
            else ""
        ),
        f"{'server':>6} {'clients':>7} {'frames/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'lost':>5} "
        f"{'peak RSS MB':>11} {'RSS growth':>10}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['server']:>6} {r['clients']:>7} {r['throughput_fps']:>9.1f} {r['p50_ms']:>8.1f} "
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
    instances: list[int] | None = None,
) -> int:
    result = run(levels, seconds, model, split, codec, max_batch, delay_ms, instances)
    print(format_table(result))
    rows = {(r["server"], r["clients"]): r for r in result["rows"]}
    for (label, clients), r in rows.items():
        one = rows.get(("x1", clients))
        if label != "x1" and one is not None:
            print(
                f"{clients} clients: {label} gives {r['throughput_fps'] / one['throughput_fps']:.2f}x the throughput "
                f"of one instance, p99 {r['p99_ms']:.0f} vs {one['p99_ms']:.0f} ms"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    bad = [r for r in result["rows"] if r["errors"] or r["lost"]]
    return 1 if bad else 0
