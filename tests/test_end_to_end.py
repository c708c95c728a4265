"""Real processes on loopback: splitrt-server, splitrt-edge, the Python client, raw gRPC."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

import splitrt
from splitrt.codecs import get_codec
from splitrt.edge.client import FrameFailed
from splitrt.edge.sources import synthetic_video
from splitrt.wire import kserve_v2_pb2 as pb
from splitrt.wire import kserve_v2_pb2_grpc as pb_grpc
from splitrt.wire.protocol import build_request

ROOT = Path(__file__).resolve().parents[1]
DET_FLAGS = [
    "--model",
    "det=fasterrcnn_mobilenet_v3_large_320_fpn",
    "--model-option",
    "num_classes=5",
    "--model-option",
    "box_score_thresh=0.0",
    "--model-option",
    "min_size=160",
    "--model-option",
    "max_size=224",
]


def frames(n: int) -> list[np.ndarray]:
    return list(synthetic_video(n, height=120, width=160, seed=3))


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def test_server_metadata_and_reflection(server, stub):
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="det")).ready
    for unknown in (pb.ModelReadyRequest(name="nope"), pb.ModelReadyRequest(name="det", version="7")):
        with pytest.raises(grpc.RpcError) as refused:  # KServe: an unknown model is NOT_FOUND, not "not ready"
            stub.ModelReady(unknown)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert "det" in refused.value.details()
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="det"))
    assert [o.name for o in meta.outputs] == ["boxes", "scores", "labels"]
    assert "device:cpu" in stub.ServerMetadata(pb.ServerMetadataRequest()).extensions
    with grpc.insecure_channel(server.address) as channel:
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        reply = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in reply.list_services_response.service}
        # grpcurl's "describe": the file that defines the service (splitrt's stubs live in a private pool)
        wanted = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in sorted(names)]
        files = [r.file_descriptor_response for r in reflect.ServerReflectionInfo(iter(wanted))]
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    assert all(f.file_descriptor_proto for f in files), "reflection could not describe every service"


def test_edge_cli_streams_and_writes_json_lines(server, tmp_path):
    out = tmp_path / "edge.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "splitrt.edge.cli",
            "synthetic:6",
            "--server",
            server.address,
            *DET_FLAGS,
            "--split",
            "features.3",
            "--codec",
            "int8-zstd",
            "--out",
            str(out),
            "--max-in-flight",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(6))
    for r in lines:
        assert r["mode"] == "split" and r["split"] == "features.3" and r["codec"] == "int8-zstd"
        assert r["error"] is None and r["bytes"] > 0 and r["detections"]
        assert {"head", "encode", "network", "server", "server_tail", "total"} <= set(r["timings_ms"])
        box = r["detections"][0]["box"]
        assert 0 <= box[0] <= box[2] <= 320 and 0 <= box[1] <= box[3] <= 240
    assert "frames: 6  answered: 6  errors: 0" in proc.stdout


@pytest.mark.parametrize("split", ["features.3", "fpn", "input"])
def test_client_detections_equal_the_local_unsplit_model(server, det_spec, split):
    image = frames(1)[0]
    codec = "png" if split == "input" else "fp32"  # both lossless
    with splitrt.connect(server.address, det_spec, split=split, codec=codec) as client:
        result = client.detect(image)
        with torch.inference_mode():
            reference = client.model.full(torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255)
    assert result.mode == ("offload" if split == "input" else "split")
    assert result.num_detections == len(reference["boxes"]) > 0
    np.testing.assert_allclose(result.boxes, reference["boxes"].numpy(), atol=1e-4)
    np.testing.assert_array_equal(result.labels, reference["labels"].numpy())
    assert result.wire_bytes > 0 and result.timings_ms["server_tail"] > 0


def test_client_accepts_numpy_pil_and_tensor(server, det_spec):
    image = frames(1)[0]
    with splitrt.connect(server.address, det_spec, split="features.6", codec="fp16-zstd") as client:
        results = [
            client.detect(image),
            client.detect(Image.fromarray(image)),
            client.detect(torch.from_numpy(image.copy()).permute(2, 0, 1)),
        ]
    for r in results[1:]:
        np.testing.assert_allclose(r.boxes, results[0].boxes, atol=1e-4)
    assert [r.frame_id for r in results] == [0, 1, 2]


def test_stream_yields_every_frame_in_order(server, det_spec):
    with splitrt.connect(server.address, det_spec, split="body", codec="int8", max_in_flight=3) as c:
        results = list(c.stream(frames(7)))
    assert [r.frame_id for r in results] == list(range(7))
    assert all(r.ok and r.num_detections > 0 for r in results)


def test_classifier_through_the_server(server):
    image = frames(1)[0]
    with splitrt.connect(server.address, server.specs["cls"], split="layer2", codec="fp32") as client:
        result = client.detect(image)
        with torch.inference_mode():
            reference = client.model.full(torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255)["logits"]
    np.testing.assert_allclose(result.logits, reference.numpy(), atol=1e-4)


def test_local_codec_needs_no_server(det_spec):
    with splitrt.connect("127.0.0.1:1", det_spec, codec="local") as client:
        result = client.detect(frames(1)[0])
    assert result.mode == "local" and result.wire_bytes == 0 and result.num_detections > 0


def _request(server, det_spec, payload: bytes | None = None, **overrides) -> pb.ModelInferRequest:
    from splitrt.models.spec import ModelSpec

    spec: ModelSpec = det_spec
    model = spec.build()
    features, meta = model.head(torch.rand(3, 120, 160), "features.3")
    payload = payload if payload is not None else get_codec("int8").encode(features)
    args = dict(
        model=spec.name,
        frame_id=99,
        payload=payload,
        codec="int8",
        split="features.3",
        meta=meta,
        fingerprint=model.fingerprint(),
    )
    args.update(overrides)
    return build_request(**args)


def test_malformed_requests_get_invalid_argument_and_the_server_keeps_serving(server, det_spec, stub):
    good = _request(server, det_spec)
    cases = {
        "corrupt bitstream": _request(server, det_spec, payload=good.raw_input_contents[0][:-7] + b"garbage"),
        "unknown codec": _request(server, det_spec, codec="bzip9"),
        "unknown split": _request(server, det_spec, split="layer42"),
        "codec/split mismatch": _request(server, det_spec, codec="jpeg"),
        "fingerprint": _request(server, det_spec, fingerprint="0123456789abcdef"),
        "wrong features": _request(server, det_spec, split="features.6"),
    }
    expected = {
        "corrupt bitstream": "checksum",
        "unknown codec": "unknown codec",
        "unknown split": "no split point",
        "codec/split mismatch": "cannot be used",
        "fingerprint": "fingerprint mismatch",
        "wrong features": "exceeds the limit",  # refused from its declared shape, before decoding
    }
    for name, request in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert expected[name] in info.value.details(), (name, info.value.details())
    wrong_model = _request(server, det_spec, model="nope")
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(wrong_model, timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "det" in info.value.details()
    reply = stub.ModelInfer(good, timeout=60)  # still serving
    assert reply.id == "99" and [o.name for o in reply.outputs] == ["boxes", "scores", "labels"]


def test_a_bad_frame_in_a_stream_is_answered_with_its_id_and_the_stream_goes_on(server, det_spec, stub):
    good = _request(server, det_spec)
    bad = _request(server, det_spec, payload=b"not a bitstream")
    requests = []
    for i, template in enumerate([good, bad, good]):
        r = pb.ModelInferRequest()
        r.CopyFrom(template)
        r.id = str(i)
        requests.append(r)
    replies = {r.infer_response.id: r for r in stub.ModelStreamInfer(iter(requests), timeout=120)}
    assert set(replies) == {"0", "1", "2"}
    assert "INVALID_ARGUMENT" in replies["1"].error_message and "magic" in replies["1"].error_message
    assert not replies["0"].error_message and not replies["2"].error_message


def test_frames_to_a_dead_server_are_reported_not_lost(det_spec):
    kwargs = dict(split="features.3", codec="int8", timeout_s=10, max_resends=1)
    with splitrt.connect("127.0.0.1:1", det_spec, on_failure="drop", **kwargs) as client:
        results = list(client.stream(frames(3)))
        failed = client.detect(frames(1)[0])  # the same error model as stream: a result, mode "error"
        assert failed.mode == "error" and "UNAVAILABLE" in failed.error
        with pytest.raises(FrameFailed, match="UNAVAILABLE") as raised:
            failed.raise_for_error()
        assert raised.value.result is failed
    assert [r.frame_id for r in results] == [0, 1, 2]
    assert all(
        r.mode == "error" and "UNAVAILABLE" in r.error and "dropped after 2 attempts" in r.error for r in results
    )
    assert client.counters["dropped"] == 4 and client.counters["resent"] == 3  # 3 streamed + 1 detect()


def test_frames_to_a_dead_server_fall_back_to_the_device(det_spec):
    with splitrt.connect("127.0.0.1:1", det_spec, split="features.3", codec="int8", max_resends=0) as client:
        results = list(client.stream(frames(3)))
        single = client.detect(frames(1)[0])
        with torch.inference_mode():
            reference = client.model.full(torch.from_numpy(frames(3)[2].copy()).permute(2, 0, 1).float() / 255)
    assert [r.mode for r in results] == ["fallback"] * 3 and single.mode == "fallback"
    assert all(r.ok and "UNAVAILABLE" in r.note for r in results)
    np.testing.assert_allclose(results[2].boxes, reference["boxes"].numpy(), atol=1e-5)
    assert client.counters["fallback"] == 4


def test_edge_cli_reports_bad_sources_and_outputs(server, tmp_path):
    base = [sys.executable, "-m", "splitrt.edge.cli", "--server", server.address, *DET_FLAGS]
    missing = subprocess.run(
        [*base, str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "a.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = subprocess.run(
        [*base, "synthetic:1", "--out", str(blocker / "out.jsonl")], capture_output=True, text=True, timeout=120
    )
    assert unwritable.returncode == 2 and "cannot write results" in unwritable.stderr


def test_example_pipeline_draws_boxes(server, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(frames(2)):
        Image.fromarray(image).save(folder / f"{i}.png")
    out_dir = tmp_path / "annotated"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "detect_pipeline.py"),
            str(folder),
            "--server",
            server.address,
            *DET_FLAGS,
            "--min-score",
            "0",
            "--out-dir",
            str(out_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    written = sorted(out_dir.glob("*.png"))
    assert len(written) == 2
    assert np.asarray(Image.open(written[0])).shape == (120, 160, 3)


def test_oversized_message_is_refused_and_the_server_keeps_serving(server, stub):
    channel = grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", -1)])
    big = pb.ModelInferRequest(model_name="det", id="huge")
    big.inputs.add(name="P", datatype="UINT8", shape=[65 * 2**20])
    big.raw_input_contents.append(bytes(65 * 2**20))
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(big, timeout=60)
    channel.close()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
