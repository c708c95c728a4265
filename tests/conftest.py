"""Shared fixtures: a real splitrt-server subprocess on a free loopback port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from splitrt.models.spec import ModelSpec, load_config

# Small inputs and score thresholds of zero: untrained detectors then still
# return boxes, so equality checks compare real detections, not empty lists.
MODELS_TOML = """
[[models]]
name = "det"
arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
options = { num_classes = 5, box_score_thresh = 0.0, min_size = 160, max_size = 224 }

[[models]]
name = "cls"
arch = "resnet18"
options = { num_classes = 10, image_size = 64 }

[[models]]
name = "shapes"
arch = "shapes_fcos"
"""

#: A small, fast model for tests of the server machinery rather than of models.
TINY_CLASSIFIER_TOML = """
[[models]]
name = "cls"
arch = "resnet18"
options = { num_classes = 10, image_size = 64 }
"""
TINY_CLASSIFIER = ModelSpec("cls", "resnet18", options={"num_classes": 10, "image_size": 64})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, address: str, proc: subprocess.Popen, log_path: Path, specs: dict[str, ModelSpec]):
        self.address = address
        self.proc = proc
        self.log_path = log_path
        self.specs = specs

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def start_server(
    config: Path,
    log_path: Path,
    timeout_s: float = 180.0,
    extra_args: list[str] | None = None,
    port: int | None = None,
    channel_factory=grpc.insecure_channel,
) -> ServerProcess:
    port = port or free_port()
    address = f"127.0.0.1:{port}"
    log_file = log_path.open("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitrt.server.app", "--port", str(port), "--config", str(config), *(extra_args or [])],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    channel = channel_factory(address)
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"server not SERVING after {timeout_s}s:\n{log_path.read_text()}")
            time.sleep(0.2)
    finally:
        channel.close()
    specs = {s.name: s for s in load_config(config)}
    return ServerProcess(address, proc, log_path, specs)


def stop_server(server: ServerProcess) -> int:
    server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        return -999


@pytest.fixture(scope="session")
def models_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "models.toml"
    path.write_text(MODELS_TOML)
    return path


@pytest.fixture(scope="session")
def server(models_config, tmp_path_factory):
    srv = start_server(models_config, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    code = stop_server(srv)
    assert code == 0, f"server did not stop cleanly on SIGTERM (exit {code}):\n{srv.log()}"


@pytest.fixture(scope="session")
def det_spec(server) -> ModelSpec:
    return server.specs["det"]
