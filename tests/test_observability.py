"""The Prometheus endpoint is scraped and parsed; rate limits answer RESOURCE_EXHAUSTED."""

from __future__ import annotations

import re
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import splitrt
from splitrt.wire import kserve_v2_pb2 as pb
from splitrt.wire import kserve_v2_pb2_grpc as pb_grpc

from .conftest import TINY_CLASSIFIER as SPEC
from .conftest import TINY_CLASSIFIER_TOML as CONFIG
from .conftest import free_port, start_server, stop_server


@pytest.fixture(scope="module")
def metered_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("metrics")
    (directory / "models.toml").write_text(CONFIG)
    metrics_port = free_port()
    server = start_server(
        directory / "models.toml",
        directory / "server.log",
        extra_args=["--metrics-port", str(metrics_port), "--max-rate", "5"],
    )
    server.metrics_port = metrics_port
    yield server
    assert stop_server(server) == 0


def _scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_metrics_count_frames_bytes_latency_and_errors(metered_server):
    image = np.full((40, 40, 3), 90, dtype=np.uint8)
    with splitrt.connect(metered_server.address, SPEC, split="layer1", codec="int8-zstd") as client:
        results = [client.detect(image) for _ in range(3)]
    sent = sum(r.wire_bytes for r in results)
    channel = grpc.insecure_channel(metered_server.address)
    bad = pb.ModelInferRequest(model_name="cls", id="x")
    bad.inputs.add(name="P", datatype="FP32", shape=[1])
    bad.raw_input_contents.append(b"1234")
    with pytest.raises(grpc.RpcError):
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(bad, timeout=10)
    channel.close()
    families = _scrape(metered_server.metrics_port)
    requests = [s for s in families["splitrt_requests"] if s.name == "splitrt_requests_total"]
    assert sum(s.value for s in requests if s.labels["split"] == "layer1") == 3
    assert {s.labels["codec"] for s in requests} == {"int8-zstd"}
    received = families["splitrt_received_payload_bytes"]
    assert sum(s.value for s in received if s.name == "splitrt_received_payload_bytes_total") == sent
    tail_counts = [s for s in families["splitrt_tail_seconds"] if s.name == "splitrt_tail_seconds_count"]
    assert sum(s.value for s in tail_counts) == 3
    errors = {
        (s.labels["model"], s.labels["code"]): s.value
        for s in families["splitrt_errors"]
        if s.name == "splitrt_errors_total"
    }
    assert errors.get(("cls", "INVALID_ARGUMENT")) == 1
    latency = families["splitrt_request_duration_seconds"]
    assert sum(s.value for s in latency if s.name == "splitrt_request_duration_seconds_count") == 3
    batches = families["splitrt_batch_size"]
    assert sum(s.value for s in batches if s.name == "splitrt_batch_size_sum") == 3
    assert any(s.value == 0 for s in families["splitrt_frames_in_flight"])


def test_rate_limit_refuses_bursts_with_resource_exhausted(metered_server):
    image = np.full((40, 40, 3), 90, dtype=np.uint8)
    with splitrt.connect(metered_server.address, SPEC, split="layer1", codec="int8", max_in_flight=16) as client:
        # 60 frames: on a loaded machine 30 came slowly enough for the 5/s budget to admit them all.
        results = list(client.stream([image] * 60))
    refused = [r for r in results if not r.ok]
    assert len(results) == 60 and refused
    assert all("RESOURCE_EXHAUSTED" in r.error and "rate limit" in r.error for r in refused)
    assert sum(r.ok for r in results) >= 5


def test_weights_pinned_by_sha256_and_json_logs(tmp_path):
    import hashlib
    import json
    import subprocess
    import sys

    from splitrt.models import save_weights
    from splitrt.models.spec import load_config

    weights = tmp_path / "cls.safetensors"
    save_weights(SPEC.build(), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    config = tmp_path / "models.toml"
    base = CONFIG.strip() + f'\nweights = "{weights.name}"\n'
    config.write_text(base + f'sha256 = "{digest}"\n')
    assert load_config(config)[0].build().fingerprint()
    config.write_text(base + f'sha256 = "{"0" * 64}"\n')
    with pytest.raises(ValueError, match="refusing to load"):
        load_config(config)[0].build()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitrt.server.app",
            "--config",
            str(config),
            "--port",
            str(free_port()),
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any("refusing to load" in entry["message"] and entry["level"] == "ERROR" for entry in lines), proc.stderr
    failed = next(entry for entry in lines if "refusing to load" in entry["message"])
    # RFC 3339 in UTC with milliseconds, where it was logged, and the call's own fields
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", failed["time"]), failed["time"]
    assert failed["reason"] == "ValueError" and failed["module"] == "app" and failed["process"] > 0
