"""splitrt-edge, unchanged, streaming to a real NVIDIA Triton server that serves our exported tails.

Triton comes from the `nvidia-pytriton` wheel (its tritonserver binary and Python
backend), installed into its own virtual environment because its tritonclient
pins protobuf < 7 while splitrt's gRPC stack needs protobuf >= 7.  Skipped, with
the reason, where that environment cannot be built (no registry, no wheel for
this platform).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from splitrt.launch import wait_serving
from splitrt.models.spec import ModelSpec
from splitrt.server import triton

from .conftest import free_port

TRITON_ENV = Path(os.environ.get("SPLITRT_TRITON_ENV", Path(__file__).resolve().parents[1] / ".venv-triton"))


def _site_packages(env: Path) -> Path:
    return env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@pytest.fixture(scope="module")
def pytriton_site() -> Path:
    site = _site_packages(TRITON_ENV)
    if triton.find_tritonserver(site) is None:
        try:
            venv.create(TRITON_ENV, with_pip=True, clear=True)
            install = subprocess.run(
                [str(TRITON_ENV / "bin" / "python"), "-m", "pip", "install", "-q", "nvidia-pytriton", "numpy<2"],
                capture_output=True,
                text=True,
                timeout=900,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot build the Triton environment: {exc}")
        if install.returncode != 0 or triton.find_tritonserver(site) is None:
            pytest.skip(f"nvidia-pytriton could not be installed here: {install.stderr.strip()[-300:]}")
    return site


@pytest.fixture(scope="module")
def triton_server(pytriton_site, tmp_path_factory):
    work = tmp_path_factory.mktemp("triton")
    repository = triton.write_repository([ModelSpec("shapes", "shapes_fcos")], work / "repository", max_batch=8)
    backends = triton.backend_directory(pytriton_site, work / "backends")
    port = free_port()
    log = work / "triton.log"
    proc = subprocess.Popen(
        triton.tritonserver_command(pytriton_site, repository, backends, port),
        env=triton.triton_environment(pytriton_site),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_serving(f"127.0.0.1:{port}", proc, timeout_s=180)
    except (RuntimeError, TimeoutError) as exc:
        proc.kill()
        pytest.fail(f"tritonserver did not come up: {exc}\n{log.read_text()[-3000:]}")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=60)


def _edge(address: str, out: Path, frames: int = 8) -> list[dict]:
    run = subprocess.run(
        [
            sys.executable, "-m", "splitrt.edge.cli", f"shapes-video:{frames}", "--server", address,
            "--model", "shapes=shapes_fcos", "--split", "features.6/slim", "--codec", "entropy", "--width", "0.5",
            "--out", str(out), "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_splitrt_edge_streams_to_triton_and_gets_splitrt_servers_detections(triton_server, server, tmp_path):
    from_triton = _edge(triton_server, tmp_path / "triton.jsonl")
    from_splitrt = _edge(server.address, tmp_path / "splitrt.jsonl")
    assert [r["mode"] for r in from_triton] == ["split"] * 8
    for a, b in zip(from_triton, from_splitrt):
        assert a["frame"] == b["frame"] and a["bytes"] == b["bytes"]
        assert [d["label"] for d in a["detections"]] == [d["label"] for d in b["detections"]]
        for da, db in zip(a["detections"], b["detections"]):
            assert da["box"] == pytest.approx(db["box"], abs=0.05)
            assert da["score"] == pytest.approx(db["score"], abs=1e-3)


def test_triton_refuses_a_corrupt_frame_and_keeps_serving(triton_server):
    import torch

    import splitrt
    from splitrt.edge.client import FrameFailed

    with splitrt.connect(triton_server, "shapes=shapes_fcos", split="features.6/eb2", codec="entropy") as client:
        good = client.detect(torch.rand(3, 120, 160))
        assert good.ok
        client.codec.encode = lambda features: b"not a bitstream"  # a broken encoder on the device
        with pytest.raises(FrameFailed, match="bitstream|SRTF|magic|CodecError"):
            client.detect(torch.rand(3, 120, 160)).raise_for_error()
        assert client.probe(64, timeout_s=5.0) is not None  # probes are answered without running the model
