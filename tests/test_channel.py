"""The shaping proxy on real loopback sockets, and an adaptive edge through it with an outage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time

import pytest

from splitrt.channel.contention import CpuContention
from splitrt.channel.proxy import Outage, ShapingProxy, parse_outage
from splitrt.channel.traces import Trace

from .conftest import free_port


async def _sink_server(received: list[float], total: list[int]):
    async def handle(reader, writer):
        while data := await reader.read(65536):
            total[0] += len(data)
            received.append(time.monotonic())
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _push_through(proxy: ShapingProxy, payload: bytes) -> tuple[float, int]:
    received: list[float] = []
    total = [0]
    sink = await _sink_server(received, total)
    proxy.upstream = ("127.0.0.1", sink.sockets[0].getsockname()[1])
    port = await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    writer.write(payload)
    await writer.drain()
    while total[0] < len(payload) and time.monotonic() - began < 30:
        await asyncio.sleep(0.01)
    elapsed = received[-1] - began
    writer.close()
    await proxy.stop()
    sink.close()
    return elapsed, total[0]


@contextlib.contextmanager
def proxy_process(upstream: str, *flags: str):
    """``splitrt channel`` as its own process between a client and ``upstream``; yields its address."""
    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "splitrt", "channel", "--listen", f"127.0.0.1:{port}", "--upstream", upstream, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "splitrt channel" in proxy.stdout.readline()
        yield f"127.0.0.1:{port}"
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def test_proxy_delivers_a_constant_rate_within_5_percent():
    mbps, size = 16.0, 2_000_000  # 1 s at the target rate
    proxy = ShapingProxy(Trace.constant(mbps, 60), ("127.0.0.1", 1), delay_ms=0.0)
    elapsed, delivered = asyncio.run(_push_through(proxy, b"x" * size))
    assert delivered == size
    rate = size * 8 / elapsed / 1e6
    assert rate == pytest.approx(mbps, rel=0.05), f"{rate:.2f} Mbit/s through a {mbps} Mbit/s link"


def test_proxy_stalls_during_an_outage():
    proxy = ShapingProxy(Trace.constant(80.0, 60), ("127.0.0.1", 1), delay_ms=0.0, outages=[Outage(0.0, 0.6)])
    elapsed, delivered = asyncio.run(_push_through(proxy, b"x" * 100_000))
    assert delivered == 100_000
    assert elapsed >= 0.55  # nothing crosses before the outage ends


def test_outage_flag_parsing():
    assert parse_outage("10:5") == Outage(10.0, 5.0)
    with pytest.raises(ValueError, match="START:DURATION"):
        parse_outage("ten")
    with pytest.raises(ValueError, match="duration > 0"):
        parse_outage("3:0")


def test_cpu_contention_processes_start_and_stop():
    with CpuContention(workers=1, duty=0.5) as burn:
        time.sleep(0.3)
        assert burn.running
    assert not burn.running


@pytest.fixture(scope="module")
def shapes_profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "profile.json"
    run = subprocess.run(
        [sys.executable, "-m", "splitrt", "profile", "--images", "4", "--out", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return path


def test_profile_lists_every_configuration(shapes_profile):
    from splitrt.adapt.profile import Profile

    profile = Profile.load(shapes_profile)
    names = profile.names
    assert "local" in names and "offload/jpeg:90" in names and "features.6/slim/entropy@0.25" in names
    slim = [profile[f"features.6/slim/entropy@{w:g}"].bytes_mean for w in (0.25, 0.5, 0.75, 1.0)]
    assert slim == sorted(slim)
    assert all(c.head_ms > 0 for c in profile.configs)
    assert not profile.fastest_local().config.remote  # a cheaper local model exists
    assert {"local@80", "local@112"} <= set(names)
    early_exit = profile["exit@features.6"]  # reuses the tensor of the features.6 heads (frozen students)
    assert "features.6/eb2/entropy" in early_exit.shares_input_with and early_exit.after_shared_ms > 0
    assert not any(name.startswith(("features.3", "offload")) for name in early_exit.shares_input_with)


def test_adaptive_edge_through_the_proxy_survives_an_outage(server, shapes_profile, tmp_path):
    """Real server, real proxy process (resets connections for 2 s), real edge: every frame is answered."""
    outage = ("--outage", "6:2", "--outage-mode", "drop")
    with proxy_process(server.address, "--mbps", "4", "--delay-ms", "10", *outage) as address:
        out = tmp_path / "adaptive.jsonl"
        frames = 50
        run = subprocess.run(
            [
                sys.executable, "-m", "splitrt.edge.cli", f"shapes-video:{frames}", "--server", address,
                "--model", "shapes=shapes_fcos", "--controller", "adaptive", "--profile", str(shapes_profile),
                "--deadline-ms", "400", "--fps", "5", "--out", str(out), "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(line["frame"] for line in lines) == list(range(frames))  # nothing lost
        assert all(line["error"] is None for line in lines)
        modes = {line["mode"] for line in lines}
        assert modes & {"split", "offload"}, modes  # the link was used
        assert modes & {"local", "fallback"}, modes  # and abandoned during the outage
        for line in lines:
            assert {"config", "predicted_ms", "reason", "mode"} <= set(line["decision"])
            assert {"bandwidth_mbps", "rtt_ms", "device_load"} <= set(line["estimates"])
        assert "met:" in run.stdout


def test_link_probe_is_answered_without_running_the_model(server):
    import splitrt

    with splitrt.connect(server.address, "shapes=shapes_fcos", split="features.6/eb2", codec="entropy") as client:
        client.wait_ready(60)
        rtt = client.probe(1200, timeout_s=5.0)
        assert rtt is not None and 0 < rtt < 5.0
        assert client.counters["server"] == 0  # not a frame


def test_link_probe_to_a_dead_server_reports_no_answer():
    import splitrt

    with splitrt.connect(f"127.0.0.1:{free_port()}", "shapes_fcos", split="features.6/eb2", codec="entropy") as client:
        assert client.probe(1200, timeout_s=0.5) is None


# -- hedged frames: the local model runs while the frame is out --------------------------------------
def _shapes_image():
    from splitrt.data.datasets import ShapesDetection

    return ShapesDetection("val", 1)[0][0]


def test_hedged_frame_keeps_the_servers_answer_when_it_comes_in_time(server):
    import splitrt

    with splitrt.connect(server.address, "shapes=shapes_fcos", split="features.6/eb2", codec="entropy") as client:
        client.wait_ready(60)
        client.use_local(80)
        result = client.detect(_shapes_image(), answer_by=time.perf_counter() + 30.0, hedge=True)
        assert result.mode == "split" and result.error is None
        assert result.note == "hedged: the server answered first"
        assert client.counters["server"] == 1 and client.counters["fallback"] == 0
        # the next frame waits for the device: the hedge's local run is over before the next head
        again = client.detect(_shapes_image(), answer_by=time.perf_counter() + 30.0, hedge=True)
        assert again.mode == "split" and again.frame_id == result.frame_id + 1


def test_hedged_frame_to_a_dead_server_delivers_the_local_result():
    import splitrt

    dead = f"127.0.0.1:{free_port()}"
    with splitrt.connect(dead, "shapes_fcos", split="features.6/eb2", codec="entropy") as client:
        client.use_local(112)
        result = client.detect(_shapes_image(), answer_by=time.perf_counter() + 5.0, hedge=True)
        assert result.mode == "fallback" and result.error is None
        assert result.note.startswith("hedged: UNAVAILABLE")  # why the server's answer is missing
        assert result.boxes is not None and result.wire_bytes > 0
        assert client.late_answers.settled() == []  # refused, not late: nothing to learn from


def test_hedged_frame_past_its_deadline_still_measures_the_link(server):
    """Through a proxy that stalls for 0.6 s: the local result now, the late answer as a link sample later."""
    import splitrt

    with proxy_process(server.address, "--mbps", "8", "--outage", "0:0.6", "--outage-mode", "stall") as address:
        with splitrt.connect(address, "shapes=shapes_fcos", split="features.6/eb2", codec="entropy") as c:
            c.use_local(80)
            result = c.detect(_shapes_image(), answer_by=time.perf_counter() + 0.2, hedge=True)
            assert result.mode == "fallback" and "no answer by the deadline" in result.note
            assert result.boxes is not None
            answers = []
            for _ in range(100):
                time.sleep(0.05)
                answers += c.late_answers.settled()
                if answers:
                    break
            assert len(answers) == 1
            nbytes, rtt, server_s, _sent = answers[0]
            assert nbytes == result.wire_bytes and 0.2 < rtt < 1.3 and server_s > 0


def test_hedged_frame_preferring_the_local_model_waits_for_it_and_keeps_the_answer_as_a_sample(server):
    """The local model is the better result: delivered although the server answered first; the answer
    is handed to the estimator as a link sample (not as a late frame)."""
    import splitrt

    with splitrt.connect(server.address, "shapes=shapes_fcos", split="features.6/eb2", codec="entropy") as client:
        client.wait_ready(60)
        client.use_local(None)  # the full local model: slower than the server's answer on loopback
        result = client.detect(_shapes_image(), answer_by=time.perf_counter() + 30.0, hedge=True, prefer_local=True)
        assert result.mode == "fallback" and result.extra.get("local_first") is True
        assert result.note == "hedged: the local model is the more accurate and finished in time"
        assert result.boxes is not None
        answers = []
        for _ in range(100):
            answers += client.late_answers.settled()
            if answers:
                break
            time.sleep(0.05)
        assert len(answers) == 1 and answers[0][1] is not None  # answered: a sample of the link
