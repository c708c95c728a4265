"""Model cards: branches, prefilter and exit declared in TOML for a zoo detector other than shapes_fcos."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

import splitrt
from splitrt.codecs import get_codec
from splitrt.edge.client import FrameFailed
from splitrt.models import save_weights
from splitrt.models.card import CardError, load_card

from .conftest import start_server, stop_server

CARD = """
name = "tiny_rcnn"
arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
classes = ["circle", "square"]

[options]
num_classes = 3
min_size = 128
max_size = 128
box_score_thresh = 0.0

[[branches]]
split = "features.6/eb1"
latent_channels = 8
hidden = 16
entropy = true
lambda = 4.0

[[branches]]
split = "features.3/bn"
latent_channels = 6
hidden = 16
entropy = false

[[branches]]
split = "features.6/slim"
latent_channels = 8
hidden = 16
widths = [0.5, 1.0]

[prefilter]
cut = "features.6"

[exit]
cut = "features.6"
"""


@pytest.fixture
def card_path(tmp_path):
    path = tmp_path / "tiny_rcnn.toml"
    path.write_text(CARD)
    return path


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (120, 150, 3), dtype=np.uint8)


def test_a_card_declares_branches_prefilter_and_exit_on_a_faster_rcnn(card_path):
    card = load_card(card_path)
    model = card.build()
    assert model.name == "tiny_rcnn" and model.class_names == ("__background__", "circle", "square")
    assert {"features.6/eb1", "features.3/bn", "features.6/slim"} <= set(model.split_points)
    assert model.branch("features.6/slim").slimmable and model.prefilter is not None
    assert card.lambda_for("features.6/eb1") == 4.0
    image = torch.rand(3, 120, 150)
    with torch.inference_mode():
        exit_out = model.exit_detect(image)
        assert set(exit_out) >= {"boxes", "scores", "labels"}
        assert 0.0 <= model.prefilter_score(image) <= 1.0
    # The card round-trips through its own TOML.
    again = tmp = card_path.with_name("again.toml")
    card.save(tmp)
    assert load_card(again).branches == card.branches


@pytest.mark.parametrize(
    "change,message",
    [
        ('arch = "fasterrcnn_mobilenet_v3_large_320_fpn"', "nope"),
        ('cut = "features.6"\n\n[exit]', "not a split point"),
        ("latent_channels = 8\nhidden = 16\nentropy = true", "latent_channels must be"),
        ('name = "tiny_rcnn"', "unknown field"),
    ],
)
def test_card_mistakes_are_named(card_path, change, message):
    text = CARD
    if message == "nope":
        text = text.replace(change, 'arch = "nope"')
        message = "not in the zoo"
    elif message == "not a split point":
        text = text.replace(change, 'cut = "layer9"\n\n[exit]')
    elif message == "latent_channels must be":
        text = text.replace(change, "latent_channels = 0\nhidden = 16\nentropy = true", 1)
    else:
        text = text.replace(change, 'name = "tiny_rcnn"\ncolour = "red"')
    card_path.write_text(text)
    with pytest.raises(CardError, match=message):
        load_card(card_path).build()


def test_missing_weights_file_is_reported(card_path):
    card_path.write_text(CARD.replace('classes = [', 'weights = "gone.safetensors"\nclasses = ['))
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        load_card(card_path).build()


def test_card_model_round_trips_over_a_real_server_and_refuses_other_weights(card_path, tmp_path):
    """Server and edge load the same card: answers equal the model's own head + codec + tail;
    an edge whose weights differ is refused by the fingerprint."""
    model = load_card(card_path).build()
    weights = tmp_path / "tiny_rcnn.safetensors"
    model.update()
    save_weights(model, weights)
    card_path.write_text(CARD.replace("classes = [", f'weights = "{weights.name}"\nclasses = ['))
    config = tmp_path / "models.toml"
    config.write_text(f'[[models]]\ncard = "{card_path.name}"\n')
    # One intra-op thread on both sides: the untrained model's detections sit at its score
    # threshold, where kernels reducing in another order keep or drop a box (and NMS others).
    server = start_server(config, tmp_path / "server.log", extra_args=["--threads", "1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = load_card(card_path).build()
        image = _image()
        cases = [("features.6/eb1", "entropy", None), ("features.3/bn", "bottleneck-int8-zstd", None)]
        for split, codec, width in [*cases, ("features.6/slim", "entropy", 0.5)]:
            with splitrt.connect(server.address, str(card_path), split=split, codec=codec, width=width) as client:
                got = client.detect(image)
            tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
            if width is not None:
                reference.branch(split).set_width(width)
            with torch.inference_mode():
                features, meta = reference.head(tensor, split)
                coder = get_codec(codec, reference, split)
                decoded = coder.decode(coder.encode(features), reference.payload_limits(split, meta))
                expected = reference.tail(OrderedDict(decoded), meta, split)
            assert got.mode == "split", got.note
            np.testing.assert_allclose(got.boxes, expected["boxes"].numpy(), atol=1e-3)
            np.testing.assert_array_equal(got.labels, expected["labels"].numpy())
        # Another set of weights for the same card: its frames are refused, not answered wrongly.
        other = tmp_path / "other.safetensors"
        with torch.no_grad():
            next(reference.parameters()).add_(0.01)
        save_weights(reference, other)
        with splitrt.connect(
            server.address, str(card_path), split="features.6/eb1", codec="entropy", weights=str(other),
            on_failure="drop",
        ) as client:  # fmt: skip
            with pytest.raises(FrameFailed, match="fingerprint mismatch"):
                client.detect(image).raise_for_error()
    finally:
        torch.set_num_threads(threads)
        assert stop_server(server) == 0


def _tiny_coco(folder, count: int, seed: int) -> None:
    """A COCO-format folder as a user would bring: images/ and an annotations JSON, squares and discs."""
    import json

    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        image = Image.new("RGB", (128, 128), tuple(int(c) for c in rng.integers(0, 80, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(2):
            x, y, size = (int(v) for v in rng.integers(8, 80, 3))
            size = max(16, size // 2)
            label = int(rng.integers(1, 3))
            (draw.ellipse if label == 1 else draw.rectangle)([x, y, x + size, y + size], fill=(230, 200, 40))
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": label,
                 "bbox": [x, y, size, size], "area": size * size, "iscrowd": 0}
            )  # fmt: skip
        image.save(folder / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 128, "height": 128})
    categories = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
    (folder / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )


def test_a_card_trains_on_a_coco_folder_then_serves(card_path, tmp_path):
    """The user's path: a card and a COCO folder -> `train teacher` -> `train bottleneck` -> serve the new card."""
    from splitrt.cli import main

    _tiny_coco(tmp_path / "train", 6, seed=1)
    _tiny_coco(tmp_path / "val", 3, seed=2)
    data = ["--data", str(tmp_path / "train" / "annotations.json")]
    teacher_out = tmp_path / "teacher"
    assert main(["train", "teacher", "--model-card", str(card_path), *data, "--steps", "2", "--batch-size", "2",
                 "--val-data", str(tmp_path / "val" / "annotations.json"), "--out", str(teacher_out)]) == 0  # fmt: skip
    teacher_card = teacher_out / "tiny_rcnn.toml"
    assert load_card(teacher_card).weights == (teacher_out / "teacher.safetensors").resolve()
    out = tmp_path / "bottleneck"
    assert main(["train", "bottleneck", "--model-card", str(teacher_card), *data, "--split", "features.6/eb1",
                 "--steps", "2", "--batch-size", "2", "--out", str(out)]) == 0  # fmt: skip
    trained_card = out / "tiny_rcnn.toml"
    log = (out / "distill-log.jsonl").read_text()
    assert '"split": "features.6/eb1"' in log and '"done": true' in log
    val = ["--val-data", str(tmp_path / "val" / "annotations.json")]
    before = load_card(trained_card).build()
    for trainer in ("prefilter", "exit"):  # both rewrite the card's weights in place
        assert main(["train", trainer, "--model-card", str(trained_card), *data, *val, "--steps", "2",
                     "--train-count", "6"]) == 0  # fmt: skip
    after = load_card(trained_card).build()
    assert before.fingerprint() != after.fingerprint()  # the prefilter and the exit were trained and saved
    config = tmp_path / "models.toml"
    config.write_text(f'[[models]]\ncard = "{trained_card}"\n')
    server = start_server(config, tmp_path / "server.log")
    try:
        reference = load_card(trained_card).build()
        image = _image(3)
        with splitrt.connect(server.address, str(trained_card), split="features.6/eb1", codec="entropy") as client:
            got = client.detect(image)
        tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        with torch.inference_mode():
            features, meta = reference.head(tensor, "features.6/eb1")
            coder = get_codec("entropy", reference, "features.6/eb1")
            decoded = coder.decode(coder.encode(features), reference.payload_limits("features.6/eb1", meta))
            expected = reference.tail(OrderedDict(decoded), meta, "features.6/eb1")
        assert got.mode == "split", got.note
        np.testing.assert_allclose(got.boxes, expected["boxes"].numpy(), atol=1e-3)
    finally:
        assert stop_server(server) == 0

