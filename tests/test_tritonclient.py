"""A real third-party client (tritonclient, gRPC) talks to splitrt-server, from the process that
also runs splitrt's own client: a pipeline that already uses tritonclient can add splitrt.

Both register the KServe v2 ``inference.*`` messages; splitrt keeps its own in a private
descriptor pool (``splitrt/wire/pool.py``), so the two load side by side.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import splitrt
from splitrt.edge.sources import synthetic_video

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra) is not installed")


def test_tritonclient_full_offload_with_a_jpeg(server, det_spec, tmp_path):
    frame = next(synthetic_video(1, height=120, width=160, seed=5))
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
    path = tmp_path / "frame.jpg"
    path.write_bytes(buffer.getvalue())

    client = grpcclient.InferenceServerClient(url=server.address)
    data = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
    image = grpcclient.InferInput("IMAGE", [data.size], "UINT8")
    image.set_data_from_numpy(data)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("boxes", "scores", "labels")]
    result = client.infer("det", [image], outputs=outputs, request_id="7")
    bad = grpcclient.InferInput("IMAGE", [4], "UINT8")
    bad.set_data_from_numpy(np.frombuffer(b"junk", dtype=np.uint8))
    with pytest.raises(grpcclient.InferenceServerException) as refused:
        client.infer("det", [bad])
    assert client.is_server_live() and client.is_model_ready("det") and result.get_response().id == "7"
    metadata = client.get_model_metadata("det", as_json=True)
    assert [o["name"] for o in metadata["outputs"]] == ["boxes", "scores", "labels"]
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "could not decode image" in refused.value.message()
    reply = {"boxes": result.as_numpy("boxes").tolist(), "labels": result.as_numpy("labels").tolist()}

    # splitrt's own client in the same process, on the same frame: the same detections.
    with splitrt.connect(server.address, det_spec, split="input", codec="png") as own:
        ours = own.detect(decoded_jpeg(buffer))
    np.testing.assert_allclose(ours.boxes, np.asarray(reply["boxes"], dtype=np.float32), atol=1e-3)

    # The boxes are what the unsplit model gives for the decoded JPEG, in its pixel coordinates.
    model = det_spec.build()
    decoded = decoded_jpeg(buffer)
    with torch.inference_mode():
        reference = model.full(torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255)
    boxes = np.asarray(reply["boxes"], dtype=np.float32)
    assert boxes.shape == (len(reference["boxes"]), 4) and len(boxes) > 0
    np.testing.assert_allclose(boxes, reference["boxes"].numpy(), atol=1e-3)
    assert reply["labels"] == reference["labels"].tolist()


def decoded_jpeg(buffer: io.BytesIO) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _jpeg(seed: int, size: tuple[int, int] = (120, 160)) -> bytes:
    frame = next(synthetic_video(1, height=size[0], width=size[1], seed=seed))
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_tritonclient_batches_bytes_inputs_and_requested_outputs(server):
    """KServe semantics a Triton user expects: BYTES images, a batch, only the outputs asked for."""
    client = grpcclient.InferenceServerClient(url=server.address)
    images = [_jpeg(1), _jpeg(2, (96, 128)), _jpeg(3)]
    one = {}
    for i, data in enumerate(images):
        single = grpcclient.InferInput("IMAGE", [1], "BYTES")
        single.set_data_from_numpy(np.array([data], dtype=np.object_))
        one[i] = client.infer("det", [single]).as_numpy("boxes")
    batch = grpcclient.InferInput("IMAGES", [len(images)], "BYTES")
    batch.set_data_from_numpy(np.array(images, dtype=np.object_))
    wanted = [grpcclient.InferRequestedOutput(n) for n in ("boxes", "num_detections")]
    result = client.infer("det", [batch], outputs=wanted)
    assert [o.name for o in result.get_response().outputs] == ["boxes", "num_detections"]
    boxes, counts = result.as_numpy("boxes"), result.as_numpy("num_detections")
    assert boxes.shape[0] == len(images) and counts.tolist() == [len(one[i]) for i in range(len(images))]
    for i in range(len(images)):  # each image's own detections, padded to the longest
        np.testing.assert_allclose(boxes[i, : counts[i]], one[i], atol=1e-3)

    # UINT8 [B, N]: B images of one length (zero padding after an image is ignored by its decoder)
    width = max(len(d) for d in images)
    padded = np.zeros((len(images), width), dtype=np.uint8)
    for i, data in enumerate(images):
        padded[i, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    rows = grpcclient.InferInput("IMAGES", list(padded.shape), "UINT8")
    rows.set_data_from_numpy(padded)
    np.testing.assert_array_equal(client.infer("det", [rows]).as_numpy("num_detections"), counts)

    with pytest.raises(grpcclient.InferenceServerException, match="unknown output 'masks'"):
        client.infer("det", [batch], outputs=[grpcclient.InferRequestedOutput("masks")])


def test_tritonclient_reads_statistics_and_the_repository_index(server):
    client = grpcclient.InferenceServerClient(url=server.address)
    data = np.frombuffer(_jpeg(4), dtype=np.uint8)
    image = grpcclient.InferInput("IMAGE", [data.size], "UINT8")
    image.set_data_from_numpy(data)
    before = client.get_inference_statistics("det", as_json=True)["model_stats"][0]
    for _ in range(2):
        client.infer("det", [image])
    after = client.get_inference_statistics("det", as_json=True)["model_stats"][0]
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 2
    stats = after["inference_stats"]
    assert int(stats["success"]["count"]) >= 2 and int(stats["compute_infer"]["ns"]) > 0
    assert int(after["last_inference"]) > 0
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {m["name"]: m["state"] for m in index} == {name: "READY" for name in server.specs}
    with pytest.raises(grpcclient.InferenceServerException, match="unknown model"):
        client.get_inference_statistics("nope")
