"""Cross-client batching: a batched tail gives each frame what its own tail gives."""

from __future__ import annotations

import pytest
import torch

from splitrt.data.datasets import ShapesDetection
from splitrt.models import build_model

from .conftest import TINY_CLASSIFIER


def _frames(model, split, images, widths=None):
    frames = []
    for i, image in enumerate(images):
        if widths:
            model.branch(split).set_width(widths[i % len(widths)])
        frames.append(model.head(image, split))
    return frames


def _same(batched, single, atol=1e-3):
    assert len(batched) == len(single)
    for b, s in zip(batched, single):
        assert set(b) == set(s)
        for key in s:
            assert b[key].shape == s[key].shape, key
            if s[key].is_floating_point():
                torch.testing.assert_close(b[key], s[key], atol=atol, rtol=1e-3)
            else:
                assert torch.equal(b[key], s[key]), key


@pytest.mark.parametrize(
    "split,widths",
    [("features.6/eb2", None), ("features.6/slim", [1.0, 0.25, 0.5]), ("features.3", None), ("input", None)],
)
def test_shapes_detector_batched_tail_matches_single(split, widths):
    model = build_model("shapes_fcos")
    data = ShapesDetection("test", 4)
    images = [data[i][0] for i in range(4)]
    images[1] = images[1][:, :120, :]  # another frame size: a batch of its own
    with torch.inference_mode():
        frames = _frames(model, split, images, widths)
        single = [model.tail(f, m, split) for f, m in frames]
        batched = model.tail_batch(frames, split)
    _same(batched, single)


def test_rcnn_and_classifier_batched_tails_match_single():
    # Untrained, the detector scores every box about 1/num_classes: in float32 the few-ulp differences a batched
    # convolution makes can reorder those near-ties (and which 100 boxes are kept). In float64 they cannot.
    torch.manual_seed(0)
    det = build_model(
        "fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=5, box_score_thresh=0.0, min_size=160, max_size=224
    ).double()
    cls = TINY_CLASSIFIER.build()
    images = [torch.rand(3, 120, 160) for _ in range(3)]
    with torch.inference_mode():
        for model, split in ((det, "features.6"), (det, "fpn"), (cls, "layer2")):
            dtype = torch.float64 if model is det else torch.float32
            frames = _frames(model, split, [image.to(dtype) for image in images])
            single = [model.tail(f, m, split) for f, m in frames]
            _same(model.tail_batch(frames, split), single)


def test_batching_server_answers_like_the_unbatched_one(server, models_config, tmp_path):
    """Concurrent clients against a server batching up to 8 frames: same detections, batches > 1 seen."""
    from concurrent.futures import ThreadPoolExecutor

    import splitrt

    from .conftest import start_server, stop_server

    batching = start_server(
        models_config, tmp_path / "batching.log", extra_args=["--max-batch", "8", "--batch-delay-ms", "50"]
    )
    data = ShapesDetection("test", 8)
    images = [data[i][0] for i in range(8)]
    try:

        def run(address, index):
            with splitrt.connect(address, "shapes=shapes_fcos", split="features.6/eb2", codec="entropy") as client:
                return client.detect(images[index])

        with ThreadPoolExecutor(8) as pool:
            batched = list(pool.map(lambda i: run(batching.address, i), range(8)))
        single = [run(server.address, i) for i in range(8)]
    finally:
        assert stop_server(batching) == 0
    assert max(r.extra["server_batch"] for r in batched) > 1
    assert all(r.extra["server_batch"] == 1 for r in single)
    for b, s in zip(batched, single):
        assert b.ok and s.ok
        assert (b.labels == s.labels).all()
        assert abs(b.boxes - s.boxes).max(initial=0) < 1e-2
        assert b.timings_ms["server_queue"] >= 0


def test_connections_are_aged_out_and_clients_carry_on(tmp_path):
    """--max-connection-age-s: the server ends connections (GOAWAY); frames keep being answered."""
    import time

    import splitrt

    from .conftest import TINY_CLASSIFIER_TOML, start_server, stop_server

    config = tmp_path / "models.toml"
    config.write_text(TINY_CLASSIFIER_TOML)
    aging = start_server(config, tmp_path / "aging.log", extra_args=["--max-connection-age-s", "1"])
    try:
        import psutil

        port = int(aging.address.rsplit(":", 1)[1])
        local_ports = set()
        with splitrt.connect(aging.address, TINY_CLASSIFIER, split="layer2", codec="int8-zstd") as client:
            results = []
            for _ in range(8):
                results.append(client.detect(torch.rand(3, 64, 64)))
                local_ports |= {
                    c.laddr.port for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port
                }
                time.sleep(0.4)
        assert all(r.ok and r.mode == "split" for r in results)
        assert len(local_ports) >= 2, "the server should have ended the first connection"
    finally:
        assert stop_server(aging) == 0


def test_server_refuses_devices_it_does_not_have():
    import subprocess
    import sys

    if not torch.cuda.is_available():
        run = subprocess.run(
            [sys.executable, "-m", "splitrt.server.app", "--device", "cuda"], capture_output=True, text=True
        )
        assert run.returncode == 2 and "no CUDA device" in run.stderr
    run = subprocess.run([sys.executable, "-m", "splitrt.server.app", "--fp16"], capture_output=True, text=True)
    assert run.returncode == 2 and "--device cuda" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "splitrt.server.app", "--device", "toaster"], capture_output=True, text=True
    )
    assert run.returncode == 2 and "not a torch device" in run.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU path; CI has none)")
def test_cuda_tails_match_cpu_tails():
    from splitrt.models.spec import ModelSpec
    from splitrt.server.repository import ServedModel

    spec = ModelSpec("shapes", "shapes_fcos")
    cpu, gpu, half = ServedModel(spec, "cpu"), ServedModel(spec, "cuda"), ServedModel(spec, "cuda", fp16=True)
    data = ShapesDetection("test", 4)
    frames = _frames(cpu.model, "features.6/eb2", [data[i][0] for i in range(4)])
    reference, _, _ = cpu.tail_batch(frames, "features.6/eb2")
    on_gpu, _, _ = gpu.tail_batch(frames, "features.6/eb2")
    _same(on_gpu, reference, atol=1e-2)
    in_half, _, _ = half.tail_batch(frames, "features.6/eb2")
    for h, r in zip(in_half, reference):
        assert h["boxes"].dtype == torch.float32 and len(h["boxes"]) > 0 and len(r["boxes"]) > 0
