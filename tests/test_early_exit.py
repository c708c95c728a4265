"""The early exit of shapes_fcos: from the head's own tensor, from the image, on the edge, and its training."""

from __future__ import annotations

import json
import time

import pytest
import torch

from splitrt.data.datasets import ShapesDetection
from splitrt.models import build_model

from .conftest import free_port


@pytest.fixture(scope="module")
def model():
    return build_model("shapes_fcos")


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("boxes", "scores", "labels"))


def test_the_exit_from_the_heads_tensor_equals_the_exit_from_the_image(model):
    image = ShapesDetection("val", 1)[0][0]
    with torch.inference_mode():
        head = model.run_head(image, "features.6/eb2", keep_cut=True)
        assert torch.equal(head.features["y"], model.head(image, "features.6/eb2")[0]["y"])  # the same head
        assert head.cut is not None and head.cut.shape[1] == 40
        assert _same(model.exit_from_cut(head.cut, head.meta), model.exit_detect(image))
        # heads that do not pass through the exit's input keep nothing, nor does a head not asked to
        assert model.run_head(image, "features.3/eb2", keep_cut=True).cut is None
        assert model.run_head(image, "input", keep_cut=True).cut is None
        assert model.run_head(image, "features.6/eb2").cut is None
        # the prefilter and the exit's input from the same pass
        both = model.run_head(image, "features.6/eb2", prefilter=0.0, keep_cut=True)
        assert torch.equal(both.cut, head.cut) and both.score is not None


def test_the_shipped_exit_detects_on_images_training_never_saw(model):
    from splitrt.train.evaluation import detection_map

    test = ShapesDetection("test", 40)
    exit_map = detection_map(lambda i: model.exit_detect(test[i][0]), test, progress=False)["map"]
    full_map = detection_map(lambda i: model.full(test[i][0]), test, progress=False)["map"]
    assert 40.0 < exit_map < full_map, (exit_map, full_map)


@pytest.mark.parametrize("prefilter", [False, True])
def test_a_hedged_split_frame_runs_the_exit_on_the_tensor_its_head_left(prefilter):
    """Dead server: the exit's result is delivered, computed from the head's tensor, not from the image again."""
    import splitrt

    image = ShapesDetection("val", 1)[0][0]
    dead = f"127.0.0.1:{free_port()}"
    options = {"prefilter": True, "prefilter_threshold": 0.0} if prefilter else {}
    with splitrt.connect(dead, "shapes_fcos", split="features.6/eb2", codec="entropy", **options) as client:
        expected = client.model.exit_detect(image)
        client.use_local(early_exit=True)

        def from_the_image(_image):
            raise AssertionError("the exit ran the layers before its cut again")

        client.model.exit_detect = from_the_image
        result = client.detect(image, answer_by=time.perf_counter() + 5.0, hedge=True)
        assert result.mode == "fallback" and result.error is None
        assert result.note.startswith("hedged: UNAVAILABLE")
        assert torch.equal(torch.as_tensor(result.boxes), expected["boxes"]) and result.wire_bytes > 0


def test_an_edge_without_an_exit_says_so():
    import splitrt
    from splitrt.models.base import SplitError

    with splitrt.connect(f"127.0.0.1:{free_port()}", "shapes_fcos", split="input", codec="jpeg") as client:
        client.model.early_exit = None
        with pytest.raises(SplitError, match="has no early exit"):
            client.use_local(early_exit=True)


def test_training_the_exit_lowers_its_loss(tmp_path):
    from splitrt.models.zoo import shipped_weights
    from splitrt.train.checkpoint import model_to_extend
    from splitrt.train.early_exit import train_exit

    model = model_to_extend(shipped_weights("shapes_fcos"), "early_exit.")  # an untrained exit
    log = tmp_path / "exit-log.jsonl"
    metrics = train_exit(model, steps=40, batch_size=8, train_count=48, val_count=4, log_path=log)
    losses = [json.loads(line)["loss"] for line in log.read_text().splitlines() if "loss" in line]
    assert len(losses) == 40 and sum(losses[-5:]) < sum(losses[:5])
    assert 0.0 <= metrics["map"] <= 100.0


def test_the_edge_cli_runs_the_exit_locally_and_refuses_a_model_without_one(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "exit.jsonl"
    base = [sys.executable, "-m", "splitrt.edge.cli", "shapes-video:3", "--server", f"127.0.0.1:{free_port()}"]
    run = subprocess.run(
        [*base, "--model", "shapes_fcos", "--codec", "local", "--local-model", "exit", "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["mode"] for line in lines] == ["local"] * 3 and all(line["detections"] for line in lines)
    refused = subprocess.run(
        [*base, "--model", "resnet18", "--codec", "local", "--local-model", "exit", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2 and "has no early exit" in refused.stderr
