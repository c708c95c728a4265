"""ModelConfig: what Triton clients (tritonclient, perf_analyzer) learn about a model, and the bench
in which perf_analyzer drives a real server with real split frames.

tritonclient registers the same `inference.*` protobuf messages as splitrt's own stubs, so it runs
in a separate process (as in test_tritonclient.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys

import grpc
import pytest

from splitrt.wire import kserve_v2_pb2 as pb
from splitrt.wire import kserve_v2_pb2_grpc as pb_grpc

from .conftest import TINY_CLASSIFIER_TOML, start_server, stop_server

CONFIG = (
    TINY_CLASSIFIER_TOML
    + """
[[models]]
name = "shapes"
arch = "shapes_fcos"
"""
)

CLIENT = r"""
import json, sys
import tritonclient.grpc as grpcclient

url, model = sys.argv[1:3]
client = grpcclient.InferenceServerClient(url=url)
try:
    client.get_model_config(model, model_version="2")
    refused = None
except grpcclient.InferenceServerException as exc:
    refused = [exc.status(), exc.message()]
print(json.dumps({"config": client.get_model_config(model, as_json=True)["config"], "refused": refused}))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("model-config")
    (work / "models.toml").write_text(CONFIG)
    srv = start_server(work / "models.toml", work / "server.log")
    yield srv
    assert stop_server(srv) == 0, srv.log()


def _stub(address: str) -> tuple[grpc.Channel, pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize("model", ["shapes", "cls"])
def test_model_config_agrees_with_model_metadata(served, model):
    channel, stub = _stub(served.address)
    with channel:
        config = stub.ModelConfig(pb.ModelConfigRequest(name=model), timeout=10).config
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=10)
        assert stub.ModelConfig(pb.ModelConfigRequest(name=model, version="1"), timeout=10).config == config
    assert (config.name, config.platform, config.backend) == (model, metadata.platform, "splitrt")
    assert config.max_batch_size == 0 and not config.model_transaction_policy.decoupled
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("PAYLOAD", pb.TYPE_UINT8, [-1])]
    outputs = [(o.name, pb.DataType.Name(o.data_type), list(o.dims)) for o in config.output]
    assert outputs == [(o.name, "TYPE_" + o.datatype, list(o.shape)) for o in metadata.outputs]
    if model == "shapes":
        assert [o[:2] for o in outputs] == [("boxes", "TYPE_FP32"), ("scores", "TYPE_FP32"), ("labels", "TYPE_INT64")]


@pytest.mark.parametrize(
    ("name", "version", "words"),
    [("nope", "", "unknown model 'nope'; this server serves cls, shapes"), ("cls", "2", "has no version '2'")],
)
def test_model_config_of_what_is_not_served_is_not_found(served, name, version, words):
    channel, stub = _stub(served.address)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.ModelConfig(pb.ModelConfigRequest(name=name, version=version), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert words in caught.value.details()


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient[grpc] is not installed")
def test_tritonclient_reads_the_model_config(served):
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, served.address, "shapes"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    config = reply["config"]
    assert config["name"] == "shapes" and config["platform"] == "splitrt_detection"
    # Triton's JSON mapping: enums by name, int64 dims as strings.
    assert config["input"] == [{"name": "PAYLOAD", "data_type": "TYPE_UINT8", "dims": ["-1"]}]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("boxes", "TYPE_FP32", ["-1", "4"]),
        ("scores", "TYPE_FP32", ["-1"]),
        ("labels", "TYPE_INT64", ["-1"]),
    ]
    assert reply["refused"][0] == "StatusCode.NOT_FOUND" and "has no version '2'" in reply["refused"][1]


@pytest.mark.slow
def test_perf_analyzer_drives_a_real_server(tmp_path, capsys):
    from splitrt.bench import perf_analyzer

    try:
        perf_analyzer.locate()
    except perf_analyzer.Unavailable as exc:
        pytest.skip(f"perf_analyzer cannot run here: {exc}")
    parser = argparse.ArgumentParser()
    perf_analyzer.add_parser(parser.add_subparsers())
    out = tmp_path / "perf.json"
    # A loose stability criterion: this checks that perf_analyzer drives the server, on a shared machine.
    window = ["--measurement-ms", "1000", "--stability-percent", "50", "--max-trials", "20"]
    args = parser.parse_args(["perf-analyzer", "--concurrency", "1,2", *window, "--out", str(out)])
    assert args.handler(args) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert [r["concurrency"] for r in result["rows"]] == [1, 2]
    assert all(r["infer_per_s"] > 0 and 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] for r in result["rows"])
    assert result["request_parameters"]["splitrt.split"] == "features.6/eb2"
    assert "infer/s" in capsys.readouterr().out
