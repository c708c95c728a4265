"""Slimmable widths and the prefilter: bitstreams, shapes, no-reload switching, thresholds, JSON lines."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys

import pytest
import torch

import splitrt
from splitrt.codecs import get_codec
from splitrt.data.datasets import ShapesDetection
from splitrt.data.shapes import video
from splitrt.models import SplitError, build_model, save_weights
from splitrt.models.spec import ModelSpec
from splitrt.prefilter import Prefilter, calibrate_threshold
from splitrt.server.repository import ServedModel
from splitrt.wire.protocol import build_request, parse_request

SLIM = "features.6/slim"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = build_model("shapes_fcos", weights="random", image_size=64)
    model.update()
    path = tmp_path_factory.mktemp("slim") / "tiny.safetensors"
    save_weights(model, path)
    return model, path


def test_each_width_gives_a_valid_smaller_bitstream_and_the_decoder_restores_the_cut(tiny):
    model, _ = tiny
    branch = model.branch(SLIM)
    image = ShapesDetection("test", 1, size=64)[0][0]
    codec = get_codec("entropy", model, SLIM)
    sizes = []
    with torch.inference_mode():
        teacher_cut, meta = model.head(image, "features.6")
        for width in sorted(branch.widths, reverse=True):
            branch.set_width(width)
            features, meta = model.head(image, SLIM)
            assert features["y"].shape[1] == branch.channels(width)  # only the channels sent are computed
            payload = codec.encode(features)
            decoded = codec.decode(payload)
            assert decoded["y"].shape == features["y"].shape
            assert branch.decode(decoded["y"]).shape == next(iter(teacher_cut.values())).shape
            assert set(model.tail(decoded, meta, SLIM)) >= {"boxes", "scores", "labels"}
            sizes.append(len(payload))
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    with pytest.raises(SplitError, match="not one of"):
        branch.set_width(0.3)


def test_server_checks_the_width_parameter(tiny):
    model, path = tiny
    served = ServedModel(ModelSpec("shapes", "shapes_fcos", str(path), {"image_size": 64}))
    image = ShapesDetection("test", 1, size=64)[0][0]
    branch = model.branch(SLIM)
    branch.set_width(0.5)
    with torch.inference_mode():
        features, meta = model.head(image, SLIM)
    payload = get_codec("entropy", model, SLIM).encode(features)

    def frame(width):
        return parse_request(
            build_request("shapes", 1, payload, "entropy", SLIM, meta, model.fingerprint(), width=width)
        )

    features_back, _ = served.decode(frame(0.5))
    assert features_back["y"].shape[1] == branch.channels(0.5)
    for width, message in ((None, "must carry its width"), (0.3, "not one of"), (0.75, "latent channels")):
        with pytest.raises(SplitError, match=message):
            served.decode(frame(width))
    other = build_request("shapes", 1, payload, "entropy", "features.6/eb2", meta, model.fingerprint(), width=0.5)
    with pytest.raises(SplitError, match="no widths"):
        served.decode(parse_request(other))
    # The edge applies the model's very rules before anything is sent.
    for split, width, message in ((SLIM, 0.3, "not one of"), ("features.6/eb2", 0.5, "no widths")):
        with pytest.raises(SplitError, match=message):
            model.check_width(split, width)
    served.close()


def test_calibrated_threshold_keeps_the_requested_recall():
    scores = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
    has_objects = torch.tensor([False, False, False, True, True, True, True, True, True, True])
    threshold = calibrate_threshold(scores, has_objects, recall=1.0)
    assert threshold == pytest.approx(0.3)
    assert float((scores[has_objects] >= threshold).float().mean()) == 1.0
    assert calibrate_threshold(torch.rand(1000), torch.ones(1000, dtype=torch.bool), recall=0.99) <= 0.02
    prefilter = Prefilter(8)
    prefilter.threshold.fill_(0.4)
    assert prefilter.keep(0.5) and not prefilter.keep(0.3) and prefilter.keep(0.3, threshold=0.2)
    with pytest.raises(ValueError):
        calibrate_threshold(scores, torch.zeros(10, dtype=torch.bool))


def test_switching_width_mid_stream_reloads_nothing(server, monkeypatch):
    frames = [frame for frame, _ in video(8)]
    widths = [1.0, 0.25, 0.5, 0.75, 1.0, 0.25, 0.75, 0.5]
    with splitrt.connect(server.address, "shapes=shapes_fcos", split=SLIM, codec="entropy") as client:
        model_before = id(client.model)

        def no_file_io(*args, **kwargs):
            raise AssertionError("a width switch must not touch files")

        monkeypatch.setattr(builtins, "open", no_file_io)
        monkeypatch.setattr(torch, "load", no_file_io)
        monkeypatch.setattr("safetensors.torch.load_file", no_file_io)

        def switching():
            for frame, width in zip(frames, widths):
                client.set_width(width)
                yield frame

        results = list(client.stream(switching()))
        monkeypatch.undo()
    assert id(client.model) == model_before
    assert [r.width for r in results] == widths and all(r.ok for r in results)
    by_width = {}
    for r in results:
        by_width.setdefault(r.width, []).append(r.wire_bytes)
    means = [sum(v) / len(v) for _, v in sorted(by_width.items())]
    assert means == sorted(means), "wider latents cost more bytes"
    assert client.counters["width_switches"] == 7


def test_prefiltered_frames_are_reported_in_json_lines(server, tmp_path):
    base = [
        sys.executable,
        "-m",
        "splitrt.edge.cli",
        "shapes-video:4",
        "--server",
        server.address,
        "--model",
        "shapes=shapes_fcos",
        "--split",
        "features.6/eb2",
        "--codec",
        "entropy",
        "--prefilter",
        "--quiet",
    ]
    everything = subprocess.run(
        [*base, "--prefilter-threshold", "1.01", "--out", str(tmp_path / "all.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert everything.returncode == 0, everything.stderr
    records = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    for r in records:
        assert r["mode"] == "prefiltered" and r["bytes"] == 0 and r["detections"] == []
        assert "prefilter score" in r["note"] and 0.0 <= r["prefilter_score"] <= 1.0
    assert "prefiltered 4" in everything.stdout
    nothing = subprocess.run(
        [*base, "--prefilter-threshold", "0", "--out", str(tmp_path / "none.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert nothing.returncode == 0, nothing.stderr
    assert all(json.loads(line)["mode"] == "split" for line in (tmp_path / "none.jsonl").read_text().splitlines())


def test_prefilter_shares_the_heads_layers_and_gives_the_same_answers():
    model = build_model("shapes_fcos")  # the shipped weights: students are frozen copies of the teacher
    image = ShapesDetection("test", 1)[0][0]
    assert model.shares_prefilter_input("features.6/eb2")
    assert not model.shares_prefilter_input("features.3/eb2")  # cut before the prefilter's input
    with torch.inference_mode():
        alone = model.prefilter_score(image)
        (features, meta) = model.head(image, "features.6/eb2")
        shared = model.run_head(image, "features.6/eb2", prefilter=0.0)
        assert shared.score == pytest.approx(alone, abs=1e-6)
        assert torch.equal(shared.features["y"], features["y"]) and shared.meta == meta
        rejected = model.run_head(image, "features.6/eb2", prefilter=1.01)
        assert not rejected.kept and rejected.score == pytest.approx(alone, abs=1e-6)
        # a split whose head does not pass through the prefilter's input runs them one after the other
        third = model.run_head(image, "features.3/eb2", prefilter=0.0)
        assert third.score == pytest.approx(alone, abs=1e-6) and third.features["y"].shape[1] == 16
