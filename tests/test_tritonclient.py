"""A real third-party client (tritonclient, gRPC) talks to splitrt-server.

tritonclient registers the same `inference.*` protobuf messages as splitrt's
own stubs, so it runs in a separate process, as any third-party client would.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from splitrt.edge.sources import synthetic_video

# Only look for it: importing it here would clash with splitrt's stubs (see the module docstring).
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tritonclient") is None, reason="tritonclient[grpc] (dev extra) is not installed"
)

CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient

url, model, path = sys.argv[1:4]
client = grpcclient.InferenceServerClient(url=url)
data = np.fromfile(path, dtype=np.uint8)
image = grpcclient.InferInput("IMAGE", [data.size], "UINT8")
image.set_data_from_numpy(data)
outputs = [grpcclient.InferRequestedOutput(n) for n in ("boxes", "scores", "labels")]
result = client.infer(model, [image], outputs=outputs, request_id="7")
bad = grpcclient.InferInput("IMAGE", [4], "UINT8")
bad.set_data_from_numpy(np.frombuffer(b"junk", dtype=np.uint8))
try:
    client.infer(model, [bad])
    refused = None
except grpcclient.InferenceServerException as exc:
    refused = [exc.status(), exc.message()]
print(json.dumps({
    "live": client.is_server_live(),
    "ready": client.is_model_ready(model),
    "metadata": client.get_model_metadata(model, as_json=True),
    "id": result.get_response().id,
    "boxes": result.as_numpy("boxes").tolist(),
    "labels": result.as_numpy("labels").tolist(),
    "refused": refused,
}))
"""


def test_tritonclient_full_offload_with_a_jpeg(server, det_spec, tmp_path):
    frame = next(synthetic_video(1, height=120, width=160, seed=5))
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
    path = tmp_path / "frame.jpg"
    path.write_bytes(buffer.getvalue())

    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, server.address, "det", str(path)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["live"] and reply["ready"] and reply["id"] == "7"
    assert [o["name"] for o in reply["metadata"]["outputs"]] == ["boxes", "scores", "labels"]
    assert reply["refused"][0] == "StatusCode.INVALID_ARGUMENT" and "could not decode image" in reply["refused"][1]

    # The boxes are what the unsplit model gives for the decoded JPEG, in its pixel coordinates.
    model = det_spec.build()
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    with torch.inference_mode():
        reference = model.full(torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255)
    boxes = np.asarray(reply["boxes"], dtype=np.float32)
    assert boxes.shape == (len(reference["boxes"]), 4) and len(boxes) > 0
    np.testing.assert_allclose(boxes, reference["boxes"].numpy(), atol=1e-3)
    assert reply["labels"] == reference["labels"].tolist()
