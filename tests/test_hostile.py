"""Attacks on a real splitrt-server: each gets its status at once, the server stays up and small,
and another client's frames are answered meanwhile.

The server listens on ``::`` (IPv6, dual-stack); the attacker connects over 127.0.0.1 and the
victim over [::1], so the two are different clients to the server's fair queue.  Each attack
adds a row (status, server RSS before/peak/after, time to refuse, the victim's p99 during the
attack vs without) to ``runs/hostile-input.json`` and the table printed at the end (``-s``).
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
import torch
import zstandard
from PIL import Image

from splitrt.codecs import bitstream, get_codec
from splitrt.models import build_model
from splitrt.models.base import FrameMeta
from splitrt.wire import kserve_v2_pb2 as pb
from splitrt.wire import kserve_v2_pb2_grpc as pb_grpc
from splitrt.wire.protocol import build_request

from .conftest import free_port, start_server, stop_server

MODEL = "shapes_fcos"
CONFIG = f'[[models]]\nname = "{MODEL}"\narch = "{MODEL}"\n'
SPLIT = "features.6/eb2"
RSS_GROWTH_LIMIT = 300 * 2**20
ROWS: list[dict] = []
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"


@pytest.fixture(scope="module")
def model():
    return build_model(MODEL)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    (directory / "models.toml").write_text(CONFIG)
    port = free_port()
    server = start_server(
        directory / "models.toml",
        directory / "server.log",
        port=port,
        extra_args=["--host", "::", "--max-rate", "100", "--max-queue-per-client", "4"],
    )
    server.port = port
    yield server
    assert stop_server(server) == 0, server.log()


def _stub(address: str):
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.GRPCInferenceServiceStub(channel)


def _legit(model, frame_id="ok") -> pb.ModelInferRequest:
    image = torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(1))
    codec = get_codec("entropy", model, SPLIT)
    features, meta = model.head(image, SPLIT)
    return build_request(MODEL, frame_id, codec.encode(features), "entropy", SPLIT, meta, model.fingerprint())


def _request(model, payload: bytes, codec: str, split: str, batch=(160, 160), frame_id="attack"):
    meta = FrameMeta((120, 150), (128, 160), batch)
    return build_request(MODEL, frame_id, payload, codec, split, meta, model.fingerprint())


class Victim:
    """Another client sending legitimate frames one after another, over [::1]."""

    def __init__(self, server, model) -> None:
        self.channel, self.stub = _stub(f"[::1]:{server.port}")
        self.request = _legit(model, "victim")
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self.stub.ModelInfer(self.request, timeout=20)
                self.latencies.append(time.perf_counter() - started)
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.channel.close()

    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies, 99) * 1e3) if self.latencies else float("nan")


class RssWatch:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        time.sleep(0.3)
        return self.process.memory_info().rss


@pytest.fixture(scope="module")
def baseline_p99(hostile_server, model):
    with Victim(hostile_server, model) as victim:
        time.sleep(3)
    assert not victim.failures, victim.failures
    return victim.p99_ms()


def attack(server, model, baseline_p99, name: str, send, expected: set[grpc.StatusCode]) -> dict:
    """Run ``send(stub)`` (one request, or a flood returning its codes) beside a victim; record the row."""
    channel, stub = _stub(f"127.0.0.1:{server.port}")
    with Victim(server, model) as victim:
        time.sleep(0.5)
        watch = RssWatch(server.proc.pid)
        started = time.perf_counter()
        codes = send(stub)
        refuse_ms = (time.perf_counter() - started) * 1e3
        time.sleep(1.0)
        after = watch.stop()
    channel.close()
    codes = codes if isinstance(codes, list) else [codes]
    row = {
        "attack": name,
        "status": "/".join(sorted({c.name for c in codes})),
        "rss_before_mb": round(watch.before / 2**20),
        "rss_peak_mb": round(watch.peak / 2**20),
        "rss_after_mb": round(after / 2**20),
        "time_to_refuse_ms": round(refuse_ms / len(codes), 1),
        "victim_p99_ms": round(victim.p99_ms(), 1),
        "victim_p99_without_ms": round(baseline_p99, 1),
        "victim_failures": len(victim.failures),
    }
    ROWS.append(row)
    assert server.proc.poll() is None, f"server died during {name}:\n{server.log()[-3000:]}"
    assert set(codes) <= expected, (name, row)
    assert not victim.failures, (name, victim.failures[:3])
    assert victim.latencies, f"the victim got no answer during {name}"
    assert watch.peak - watch.before < RSS_GROWTH_LIMIT, row
    return row


def _code(stub, request) -> grpc.StatusCode:
    try:
        stub.ModelInfer(request, timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        assert exc.details() and len(exc.details()) < 2000
        return exc.code()


def _codes(futures) -> list[grpc.StatusCode]:
    """The status each of several concurrent calls ended with."""
    codes = []
    for future in futures:
        try:
            future.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    return codes


def _entropy_frame(height: int, width: int, string: bytes) -> bytes:
    return bitstream.pack([("y", (1, 24, height, width), string)], compress=False)


INVALID = {grpc.StatusCode.INVALID_ARGUMENT}


@pytest.mark.parametrize(
    "name,height,width,string",
    [
        ("entropy 1000x1000, 1-byte rANS", 1000, 1000, b"\x01"),
        ("entropy 200x200, empty rANS", 200, 200, b""),
        ("entropy 11x11, 1-byte rANS", 11, 11, b"\x07"),
        ("entropy 11x11, random rANS", 11, 11, bytes(range(256)) * 2),
    ],
)
def test_entropy_frames_that_crashed_the_decoder(hostile_server, model, baseline_p99, name, height, width, string):
    payload = _entropy_frame(height, width, string)
    request = _request(model, payload, "entropy", SPLIT, batch=(max(160, height * 16), max(160, width * 16)))
    attack(hostile_server, model, baseline_p99, name, lambda stub: _code(stub, request), INVALID)


def _bomb(declared: bool) -> bytes:
    """An int8-zstd container whose body inflates to ~300 MB of zeros (a tensor far past the model's)."""
    shape = (1, 24, 3000, 4000)
    header = struct.pack("<H", 1) + struct.pack("<B", 1) + b"y" + struct.pack("<B4I", 4, *shape)
    size = 8 * 24 + 24 * 3000 * 4000
    out = io.BytesIO()
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=declared)
    with compressor.stream_writer(out, size=len(header) + 4 + size if declared else -1, closefd=False) as writer:
        writer.write(header + struct.pack("<I", size))
        chunk = bytes(1 << 22)
        for _ in range(size // len(chunk)):
            writer.write(chunk)
        writer.write(bytes(size % len(chunk)))
    return bitstream.MAGIC + struct.pack("<BB", bitstream.VERSION, bitstream.FLAG_ZSTD) + out.getvalue() + bytes(4)


@pytest.mark.parametrize("declared", [True, False], ids=["declared-size", "undeclared-size"])
def test_zstd_bombs_are_refused_unread(hostile_server, model, baseline_p99, declared):
    request = _request(model, _bomb(declared), "bottleneck-int8-zstd", "features.6/bn")
    name = f"zstd bomb, {'declared' if declared else 'undeclared'} 288 MB"
    attack(hostile_server, model, baseline_p99, name, lambda stub: _code(stub, request), INVALID)


def test_frames_claiming_a_huge_input_are_refused(hostile_server, model, baseline_p99):
    latent = torch.zeros(1, 24, 4097, 4097)
    payload = get_codec("int8-zstd").encode({"y": latent})
    request = _request(model, payload, "bottleneck-int8-zstd", "features.6/bn", batch=(65535, 65535))
    row = attack(
        hostile_server,
        model,
        baseline_p99,
        "bottleneck frame claiming 65535x65535",
        lambda stub: _code(stub, request),
        INVALID,
    )
    assert row["time_to_refuse_ms"] < 5000
    small = get_codec("int8").encode({"x": torch.zeros(1, 40, 2, 2)})
    request = _request(model, small, "int8", "features.6", batch=(65535, 65535))
    attack(
        hostile_server,
        model,
        baseline_p99,
        "int8 frame claiming 65535x65535",
        lambda stub: _code(stub, request),
        INVALID,
    )


def _jpeg(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(
        buffer, format="JPEG"
    )
    return buffer.getvalue()


def _claim_size(jpeg: bytes, height: int, width: int) -> bytes:
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


def _plain(payload: bytes, model_name=MODEL, version="") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model_name, model_version=version, id="plain")
    request.inputs.add(name="IMAGE", datatype="UINT8", shape=[len(payload)])
    request.raw_input_contents.append(payload)
    return request


def test_corrupt_images_are_refused(hostile_server, model, baseline_p99):
    truncated = _claim_size(_jpeg(), 6000, 6000)[:600]
    attack(
        hostile_server,
        model,
        baseline_p99,
        "truncated JPEG claiming 6000x6000",
        lambda stub: _code(stub, _plain(truncated)),
        INVALID,
    )
    cut = _jpeg((300, 200))
    attack(
        hostile_server,
        model,
        baseline_p99,
        "truncated JPEG 300x200",
        lambda stub: _code(stub, _plain(cut[: len(cut) // 2])),
        INVALID,
    )
    channel, stub = _stub(f"127.0.0.1:{hostile_server.port}")
    assert _code(stub, _plain(_jpeg())) == grpc.StatusCode.OK  # a whole image still gets detections
    channel.close()


def test_attacker_strings_are_clipped_and_versions_checked(hostile_server, model, baseline_p99):
    long_name = "m" * 100_000
    attack(
        hostile_server,
        model,
        baseline_p99,
        "100,000-character model name",
        lambda stub: _code(stub, _plain(_jpeg(), model_name=long_name)),
        {grpc.StatusCode.NOT_FOUND},
    )
    attack(
        hostile_server,
        model,
        baseline_p99,
        "model_version 999",
        lambda stub: _code(stub, _plain(_jpeg(), version="999")),
        {grpc.StatusCode.NOT_FOUND},
    )
    channel, stub = _stub(f"127.0.0.1:{hostile_server.port}")
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version="999"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version="1"), timeout=10).name == MODEL
    channel.close()
    log = hostile_server.log()
    assert "m" * 300 not in log, "a log line quoted the whole attacker-chosen name"


def test_a_made_up_token_per_call_does_not_escape_the_rate_limit(hostile_server, model, baseline_p99):
    probe = pb.ModelInferRequest(model_name=MODEL, id="p")
    probe.inputs.add(name="PAYLOAD", datatype="UINT8", shape=[1, 1])
    probe.raw_input_contents.append(b"\x00")
    probe.parameters["splitrt.probe"].bool_param = True

    def flood(stub):
        codes = []
        for _ in range(30):  # 1500 probes, 50 at a time: far past 100 frames/s with bursts of 200
            futures = [
                stub.ModelInfer.future(probe, timeout=10, metadata=[("authorization", f"Bearer {uuid.uuid4()}")])
                for _ in range(50)
            ]
            codes += _codes(futures)
        return codes

    attack(
        hostile_server,
        model,
        baseline_p99,
        "1500 probes, 50 at once, random token each (auth off)",
        flood,
        {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED},
    )
    assert ROWS[-1]["status"] == "OK/RESOURCE_EXHAUSTED"


def test_a_flood_of_streams_that_never_read_does_not_starve_others(hostile_server, model, baseline_p99):
    legit = _legit(model, "flood")

    def flood(stub):
        calls, codes = [], []
        for _ in range(100):
            calls.append(stub.ModelStreamInfer(iter([legit] * 20), timeout=30))  # nobody reads these
        time.sleep(4.0)
        for call in calls:
            call.cancel()
        for _ in range(60):  # and unary frames as fast as the attacker can, 16 at once
            codes += _codes([stub.ModelInfer.future(legit, timeout=30) for _ in range(16)])
            if len(codes) >= 320:
                break
        return codes

    attack(
        hostile_server,
        model,
        baseline_p99,
        "100 unread streams + 16-wide unary flood",
        flood,
        {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED},
    )


def test_regression_inputs_still_refused(model):
    """Inputs that once crashed or fooled a decoder, replayed through the fuzz targets in a subprocess."""
    from splitrt.bench.fuzz import replay

    for target in sorted(p.name for p in REGRESSIONS.iterdir() if p.is_dir()):
        files = sorted((REGRESSIONS / target).iterdir())
        result = replay(target, files)
        assert result.returncode == 0, (target, result.stdout[-2000:], result.stderr[-2000:])


def test_zz_write_the_table():
    if not ROWS:
        pytest.skip("no attack ran")
    out = Path("runs") / "hostile-input.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(ROWS, indent=2))
    header = f"{'attack':<44} {'status':<26} {'RSS MB before/peak/after':>25} {'refuse ms':>9} {'victim p99 ms':>15}"
    print("\n" + header)
    for r in ROWS:
        rss = f"{r['rss_before_mb']}/{r['rss_peak_mb']}/{r['rss_after_mb']}"
        p99 = f"{r['victim_p99_ms']} vs {r['victim_p99_without_ms']}"
        print(f"{r['attack']:<44} {r['status']:<26} {rss:>25} {r['time_to_refuse_ms']:>9} {p99:>15}")
