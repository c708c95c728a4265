"""Shared fixtures: a real splitrt-server subprocess on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from splitrt import launch
from splitrt.launch import free_port  # noqa: F401  (the tests import it from here)
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


class ServerProcess(launch.ServerProcess):
    """A test server: `splitrt.launch.ServerProcess` plus the model specs its config names."""

    specs: dict[str, ModelSpec]


def start_server(
    config: Path,
    log_path: Path,
    timeout_s: float = 180.0,
    extra_args: list[str] | None = None,
    port: int | None = None,
    channel_factory=grpc.insecure_channel,
) -> ServerProcess:
    server = ServerProcess(
        ["--config", str(config), *(extra_args or [])],
        port=port,
        log=log_path,
        timeout_s=timeout_s,
        channel_factory=channel_factory,
    )
    server.wait_serving()
    server.specs = {s.name: s for s in load_config(config)}
    return server


def stop_server(server: ServerProcess) -> int:
    return server.stop()


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
