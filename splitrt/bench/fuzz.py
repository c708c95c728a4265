"""Coverage-guided fuzzing (atheris / libFuzzer) of every decoder a server runs on client bytes.

Each target runs in its own subprocess, so a crash in native code (a decoder
reading out of bounds, an abort) ends that process, not the runner: libFuzzer
writes the input that did it under ``crashes/`` and the runner reports it.
Inputs found that way are kept under ``tests/fuzz_regressions/<target>/``
and replayed by the test suite.

``splitrt bench fuzz --minutes N`` splits N minutes over the targets;
``python -m splitrt.bench.fuzz run TARGET SECONDS DIR`` runs one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: Decoders under test: each codec's decode, the container alone, and the whole request path.
TARGETS = [
    "entropy",
    "slim-entropy",
    "bottleneck-int8-zstd",
    "fp32",
    "fp16-zstd",
    "int8",
    "int8-zstd",
    "bitstream",
    "image",
    "raw",
    "request",
]
MODEL = "shapes_fcos"
_SPLITS = {
    "entropy": "features.6/eb2",
    "slim-entropy": "features.6/slim",
    "bottleneck-int8-zstd": "features.6/bn",
    "fp32": "features.3",
    "fp16-zstd": "features.3",
    "int8": "features.6",
    "int8-zstd": "features.6",
}


def build_target(name: str) -> tuple[Callable[[bytes], None], list[bytes]]:
    """The function libFuzzer calls with each input, and valid inputs to start from."""
    import torch

    from ..codecs import CodecError, bitstream, get_codec
    from ..models.base import SplitError
    from ..models.spec import ModelSpec
    from ..server.repository import ServedModel
    from ..wire import kserve_v2_pb2 as pb
    from ..wire.protocol import WireError, build_request, parse_request

    served = ServedModel(ModelSpec(MODEL, MODEL))
    model = served.model
    image = torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(0))
    expected: tuple[type[BaseException], ...] = (CodecError, SplitError, WireError)

    if name in _SPLITS:
        split = _SPLITS[name]
        codec_name = "entropy" if "entropy" in name else name
        codec = get_codec(codec_name, model, split)
        features, meta = model.head(image, split)
        limits = model.payload_limits(split, meta)
        seeds = [codec.encode(features)]

        def one(data: bytes) -> None:
            codec.decode(data, limits)

    elif name == "bitstream":
        features, _ = model.head(image, "features.6")
        seeds = [get_codec(c).encode(features) for c in ("fp16", "int8-zstd")]

        def one(data: bytes) -> None:
            compressed = len(data) > 5 and (data[5] & bitstream.FLAG_ZSTD) != 0
            bitstream.unpack(data, expect_compressed=compressed, max_body_bytes=1 << 20)

    elif name in ("image", "raw"):
        codec = get_codec(name)
        seeds = [
            get_codec(c).encode({"image": image.unsqueeze(0)})
            for c in (["jpeg", "png", "webp"] if name == "image" else ["raw"])
        ]

        def one(data: bytes) -> None:
            codec.decode(data)

    elif name == "request":
        from google.protobuf.message import DecodeError

        expected = (*expected, DecodeError)
        seeds = []
        for split, codec_name in (("features.6/eb2", "entropy"), ("features.3", "int8-zstd"), ("input", "jpeg")):
            codec = get_codec(codec_name, model, split)
            features, meta = model.head(image, split)
            request = build_request(MODEL, 0, codec.encode(features), codec_name, split, meta, served.fingerprint)
            seeds.append(request.SerializeToString())

        def one(data: bytes) -> None:
            served.decode(parse_request(pb.ModelInferRequest.FromString(data)))

    else:
        raise ValueError(f"unknown fuzz target {name!r}; targets: {', '.join(TARGETS)}")

    def test_one_input(data: bytes) -> None:
        # Each input twice: as it is, and with its container checksum made right, so that
        # mutations get past the CRC to the decoders behind it.
        for candidate in (data, with_valid_checksum(data)):
            try:
                one(candidate)
            except expected:
                pass  # a clear refusal is the right answer to bad bytes

    return test_one_input, seeds


def with_valid_checksum(data: bytes) -> bytes:
    """``data`` with the CRC a splitrt container would carry for its body (unchanged if it is none)."""
    import zlib

    import zstandard

    from ..codecs import bitstream

    if len(data) < 10 or data[:4] != bitstream.MAGIC:
        return data
    body = data[6:-4]
    if data[5] & bitstream.FLAG_ZSTD:
        try:
            body = zstandard.ZstdDecompressor().stream_reader(body).read(1 << 20)
        except zstandard.ZstdError:
            return data
    return data[:-4] + zlib.crc32(body).to_bytes(4, "little")


def _run_one(name: str, seconds: int, directory: Path) -> int:
    """Inside the subprocess: fuzz ``name`` for ``seconds`` with libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["splitrt", "zstandard", "PIL"]):
        import splitrt.codecs  # noqa: F401
        import splitrt.server.repository  # noqa: F401
        import splitrt.wire.protocol  # noqa: F401
    test_one_input, seeds = build_target(name)
    corpus = directory / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index}").write_bytes(seed)
    crashes = directory / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        f"-artifact_prefix={crashes}/{name}-",
        "-timeout=20",
        "-rss_limit_mb=4096",
        "-max_len=65536",
        "-print_final_stats=1",
    ]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()
    return 0


def _replay(name: str, files: list[Path]) -> int:
    """Inside the subprocess: feed saved inputs to ``name``; a crash kills this process with a signal."""
    test_one_input, _ = build_target(name)
    for file in files:
        test_one_input(file.read_bytes())
    return 0


def run_target(name: str, seconds: int, directory: Path) -> dict:
    """Fuzz one target in a subprocess; returns what happened (runs, crash files, exit code)."""
    started = time.monotonic()
    log = directory / f"{name}.log"
    directory.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "splitrt.bench.fuzz", "run", name, str(seconds), str(directory)],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=seconds + 300,
        )
    text = log.read_text(errors="replace")
    runs = [int(line.split(":")[-1]) for line in text.splitlines() if "stat::number_of_executed_units" in line]
    crashes = sorted(str(p) for p in (directory / "crashes").glob(f"{name}-*"))
    return {
        "target": name,
        "seconds": round(time.monotonic() - started, 1),
        "executions": runs[-1] if runs else None,
        "exit_code": proc.returncode,
        "crashes": crashes,
        "log": str(log),
    }


def replay(name: str, files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splitrt.bench.fuzz", "replay", name, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def run(minutes: float, out: str, targets: list[str] | None = None) -> list[dict]:
    """``splitrt bench fuzz``: N minutes over the targets, a table, and JSON."""
    targets = targets or TARGETS
    seconds = max(5, int(minutes * 60 / len(targets)))
    directory = Path(out).with_suffix("")
    results = []
    print(f"{'target':<22} {'seconds':>8} {'executions':>11} {'crashes':>8}")
    for name in targets:
        result = run_target(name, seconds, directory)
        results.append(result)
        print(f"{name:<22} {result['seconds']:>8} {result['executions']!s:>11} {len(result['crashes']):>8}", flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))
    bad = [r for r in results if r["exit_code"] != 0 or r["crashes"]]
    print(f"{len(bad)} target(s) crashed; inputs under {directory}/crashes" if bad else "0 crashes")
    return results


def main(argv: list[str]) -> int:
    if argv[0] == "run":
        return _run_one(argv[1], int(argv[2]), Path(argv[3]))
    if argv[0] == "replay":
        return _replay(argv[1], [Path(a) for a in argv[2:]])
    raise SystemExit("usage: python -m splitrt.bench.fuzz run TARGET SECONDS DIR | replay TARGET FILE...")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
