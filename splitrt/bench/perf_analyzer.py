"""`splitrt bench perf-analyzer`: Triton's own load generator, perf_analyzer, drives a real splitrt-server.

perf_analyzer is a third-party client: it learns the model from ModelMetadata and ModelConfig and
sends plain KServe v2 requests, so the numbers say what any Triton client would see.  It can only
send input tensors and typed request parameters, which is all a split frame is: the encoded
features travel as the UINT8 ``PAYLOAD`` tensor (``--input-data``, base64) and splitrt's decoding
parameters (codec, split, fingerprint, frame sizes) as ``--request-parameter name:value:type``
(gRPC only).  One frame is encoded here, before the run, and every request replays it.

perf_analyzer ships in the tritonclient wheel as a binary that needs two shared libraries the wheel
does not bring: libb64 (Debian: ``libb64-0d``) and the CUDA 12 runtime (``nvidia-cuda-runtime-cu12``
from PyPI; it loads without a GPU).  Missing either, the bench says which and returns 1.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..defaults import DEMO_CODEC, DEMO_MODEL, DEMO_SPLIT
from ..launch import ServerProcess

#: perf_analyzer's CSV columns (latencies in microseconds) and the names they get here.
CSV_COLUMNS = {
    "Inferences/Second": "infer_per_s",
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
}
#: The parameter types perf_analyzer can send, by the Python type of the value.
_PARAM_TYPES = {bool: "bool", int: "int", str: "string"}


@dataclass(frozen=True)
class Window:
    """How perf_analyzer measures each level: windows of ``measurement_ms`` until the last three agree
    within ``stability_percent`` (infer/s and latency), at most ``max_trials`` windows."""

    measurement_ms: int = 5000
    stability_percent: float = 10.0
    max_trials: int = 10

    def flags(self) -> list[str]:
        return ["-p", str(self.measurement_ms), "-s", f"{self.stability_percent:g}", "-r", str(self.max_trials)]

    @property
    def timeout_s(self) -> float:
        """Generous: every window tried, each up to twice as long as asked, plus start-up."""
        return 60 + 2 * self.max_trials * self.measurement_ms / 1000


class Unavailable(RuntimeError):
    """perf_analyzer is missing or cannot start here; the message says exactly why."""


def add_parser(benches: argparse._SubParsersAction) -> None:
    parser = benches.add_parser(
        "perf-analyzer", help="Triton's perf_analyzer against a real splitrt-server: infer/s, p50/p90/p99"
    )
    parser.add_argument("--model", default=DEMO_MODEL, help="model (default: %(default)s)")
    parser.add_argument("--split", default=DEMO_SPLIT, help="split (default: %(default)s)")
    parser.add_argument("--codec", default=DEMO_CODEC, help="codec (default: %(default)s)")
    parser.add_argument("--concurrency", default="1,2,4", help="comma-separated levels (default: %(default)s)")
    parser.add_argument(
        "--measurement-ms", type=int, default=5000, help="perf_analyzer's measurement window (default: %(default)s)"
    )
    parser.add_argument(
        "--stability-percent",
        type=float,
        default=10.0,
        help="how far windows may differ before a level counts as stable (default: %(default)s)",
    )
    parser.add_argument(
        "--max-trials", type=int, default=10, help="windows tried per level before giving up (default: %(default)s)"
    )
    parser.add_argument("--perf-analyzer", help="the binary (default: next to this Python, else on PATH)")
    parser.add_argument("--out", default="runs/bench-perf-analyzer.json", help="JSON output (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Measure, print the table, write the JSON; 1 with the reason when perf_analyzer cannot run."""
    levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    try:
        binary, env = locate(args.perf_analyzer)
        window = Window(args.measurement_ms, args.stability_percent, args.max_trials)
        result = measure(binary, env, args.model, args.split, args.codec, levels, window)
    except Unavailable as exc:
        print(f"bench perf-analyzer: cannot run perf_analyzer: {exc}", file=sys.stderr)
        return 1
    print(format_table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written: {out}")
    return 0


# -- finding a perf_analyzer that starts ------------------------------------------------------------------
def locate(explicit: str | None = None) -> tuple[str, dict[str, str]]:
    """The binary and the environment it starts in; raises `Unavailable` with the loader's own words."""
    binary = explicit or _beside_python() or shutil.which("perf_analyzer")
    if binary is None or not Path(binary).is_file():
        raise Unavailable(
            f"no perf_analyzer binary ({explicit or 'not next to ' + sys.executable + ' nor on PATH'}); "
            "it ships in the tritonclient wheel: pip install 'tritonclient[all]'"
        )
    env = dict(os.environ)
    cudart = _cuda12_runtime_dir()
    if cudart is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(cudart), env.get("LD_LIBRARY_PATH")) if p)
    probe = subprocess.run([binary, "--help"], capture_output=True, text=True, env=env, timeout=60)
    text = probe.stdout + probe.stderr
    if "error while loading shared libraries" in text:
        raise Unavailable(f"{text.strip()} ({_LIBRARY_HINTS})")
    if "--request-parameter" not in text:
        raise Unavailable(f"{binary} has no --request-parameter option (tritonclient >= 2.39 has it)")
    return binary, env


_LIBRARY_HINTS = "libb64.so.0d: apt-get install libb64-0d; libcudart.so.12: pip install nvidia-cuda-runtime-cu12"


def _beside_python() -> str | None:
    candidate = Path(sys.executable).parent / "perf_analyzer"
    return str(candidate) if candidate.is_file() else None


def _cuda12_runtime_dir() -> Path | None:
    """Where the nvidia-cuda-runtime-cu12 wheel put libcudart.so.12, if it is installed."""
    for entry in sys.path:
        lib = Path(entry or ".") / "nvidia" / "cuda_runtime" / "lib"
        if (lib / "libcudart.so.12").is_file():
            return lib
    return None


# -- what perf_analyzer sends -------------------------------------------------------------------------------
def frame_inputs(model: str, split: str, codec: str) -> tuple[bytes, dict[str, object], Path | None]:
    """One real encoded frame: its payload, its request parameters, and the weights both sides load."""
    from ..models.zoo import shipped_weights
    from ..wire import kserve_v2_pb2 as pb
    from ..wire.protocol import read_params
    from .load import encoded_request

    request = pb.ModelInferRequest.FromString(encoded_request(model, split, codec))
    return request.raw_input_contents[0], read_params(request.parameters), shipped_weights(model)


def request_parameters(params: dict[str, object]) -> list[str]:
    """``--request-parameter`` values for ``params``.  perf_analyzer splits each at ':' and lowercases
    every part, so a value it would change is refused here rather than sent altered."""
    flags = []
    for key, value in sorted(params.items()):
        kind = _PARAM_TYPES.get(type(value))
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if kind is None or ":" in key + text or (key + text).lower() != key + text:
            raise Unavailable(f"perf_analyzer cannot carry request parameter {key}={value!r} unchanged")
        flags += ["--request-parameter", f"{key}:{text}:{kind}"]
    return flags


def input_data(payload: bytes, path: Path) -> Path:
    """perf_analyzer's JSON input file: the payload as the one UINT8 tensor, base64, shaped [N]."""
    from ..wire.protocol import PAYLOAD_INPUT

    tensor = {"b64": base64.b64encode(payload).decode("ascii"), "shape": [len(payload)]}
    path.write_text(json.dumps({"data": [{PAYLOAD_INPUT: tensor}]}))
    return path


def command(
    binary: str, address: str, model: str, data: Path, params: list[str], level: int, window: Window, csv_path: Path
) -> list[str]:
    """The perf_analyzer command line for one concurrency level (one row in ``csv_path``)."""
    target = ["-m", model, "-u", address, "-i", "grpc"]
    load = ["--concurrency-range", f"{level}:{level}", *window.flags()]
    return [binary, *target, "--input-data", str(data), *params, *load, "-f", str(csv_path)]


# -- running it ----------------------------------------------------------------------------------------------
def measure(
    binary: str,
    env: dict[str, str],
    model: str,
    split: str,
    codec: str,
    levels: list[int],
    window: Window,
) -> dict[str, Any]:
    """One splitrt-server, one perf_analyzer run per concurrency level against it."""
    payload, params, weights = frame_inputs(model, split, codec)
    flags = request_parameters(params)
    server_args = ["--model", model, "--max-rate", "0", "--log-level", "WARNING"]
    if weights is not None:  # what the head above loaded, named explicitly so both sides agree
        server_args += ["--weights", str(weights)]
    rows, commands = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = input_data(payload, work / "input.json")
        with ServerProcess(server_args, log=work / "server.log") as server:
            for level in levels:
                csv_path = work / f"c{level}.csv"
                argv = command(binary, server.address, model, data, flags, level, window, csv_path)
                commands.append(argv)
                rows.append(_one_level(argv, env, csv_path, window.timeout_s, server.log))
    return {
        "benchmark": "perf-analyzer",
        "model": model,
        "split": split,
        "codec": codec,
        "payload_bytes": len(payload),
        "request_parameters": dict(sorted(params.items())),
        "measurement_ms": window.measurement_ms,
        "command": commands[0] if commands else [],
        "rows": rows,
    }


def _one_level(
    argv: list[str], env: dict[str, str], csv_path: Path, timeout_s: float, server_log: Callable[[], str]
) -> dict[str, float]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout_s)
    if proc.returncode != 0 or not csv_path.is_file():
        raise Unavailable(
            f"perf_analyzer exited with {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}\n"
            f"server log:\n{server_log()[-2000:]}"
        )
    rows = parse_csv(csv_path)
    if len(rows) != 1:
        raise Unavailable(f"expected one row in {csv_path.name}, found {len(rows)}")
    return rows[0]


def parse_csv(path: Path) -> list[dict[str, float]]:
    """perf_analyzer's latency report (``-f``): one row per level, latencies converted to ms."""
    rows = []
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            row = {"concurrency": int(record["Concurrency"])}
            for column, name in CSV_COLUMNS.items():
                value = float(record[column])
                row[name] = value if name == "infer_per_s" else value / 1000
            rows.append(row)
    return rows


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"bench perf-analyzer: {result['model']} split {result['split']} codec {result['codec']}, "
        f"{result['payload_bytes']} B payload; perf_analyzer over gRPC, {result['measurement_ms']} ms windows",
        f"{'concurrency':>11} {'infer/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['concurrency']:>11} {r['infer_per_s']:>9.1f} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f}"
        )
    return "\n".join(lines)
