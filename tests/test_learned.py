"""Bottlenecks, entropy coding and training: real bitstreams, real checkpoints, real losses."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from splitrt.codecs import CodecError, get_codec
from splitrt.data.datasets import ShapesDetection, collate
from splitrt.models import build_model, save_weights
from splitrt.train.bottleneck import distill_branch, reset_students

SPLIT = "features.6/eb2"


@pytest.fixture(scope="module")
def tiny_model():
    """Untrained shapes_fcos at 64 px with CDF tables built, as after training."""
    model = build_model("shapes_fcos", weights="random", image_size=64)
    model.update()
    return model


def test_teacher_loss_falls_in_a_few_steps():
    model = build_model("shapes_fcos", weights="random", image_size=64)
    detector = model.detector.train()
    images, targets = collate([ShapesDetection("train", 4, size=64)[i] for i in (0, 1)])
    optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_distillation_reduces_the_feature_error():
    model = build_model("shapes_fcos", weights="random", image_size=64)
    for p in model.detector.parameters():
        p.requires_grad_(False)
    reset_students(model)
    first = distill_branch(model, "features.6/bn", steps=1, batch_size=2, train_count=2)["relative_mse"]
    last = distill_branch(model, "features.6/bn", steps=12, batch_size=2, train_count=2, lr=3e-3)["relative_mse"]
    assert last < first


def test_entropy_codec_round_trips_the_quantised_latent(tiny_model):
    image = ShapesDetection("test", 1, size=64)[0][0]
    with torch.inference_mode():
        features, meta = tiny_model.head(image, SPLIT)
        codec = get_codec("entropy", tiny_model, SPLIT)
        payload = codec.encode(features)
        decoded = codec.decode(payload)["y"]
        eb = tiny_model.branch(SPLIT).entropy_bottleneck
        medians = eb.medians(features["y"].shape[1])
        quantised = torch.round(features["y"] - medians) + medians
    assert isinstance(payload, bytes) and 0 < len(payload) < features["y"].numel() * 4
    torch.testing.assert_close(decoded, quantised, atol=1e-5, rtol=0)
    with torch.inference_mode():
        out = tiny_model.tail(codec.decode(payload), meta, SPLIT)
    assert set(out) >= {"boxes", "scores", "labels"}


def test_entropy_codec_refuses_corrupt_or_misdirected_payloads(tiny_model):
    image = ShapesDetection("test", 1, size=64)[0][0]
    with torch.inference_mode():
        features, _ = tiny_model.head(image, SPLIT)
    codec = get_codec("entropy", tiny_model, SPLIT)
    payload = bytearray(codec.encode(features))
    payload[len(payload) // 2] ^= 0x5A
    with pytest.raises(CodecError, match="checksum"):
        codec.decode(bytes(payload))
    with pytest.raises(CodecError, match="truncated|checksum"):
        codec.decode(bytes(payload[:-3]))
    with pytest.raises(CodecError, match="plain bottleneck"):
        get_codec("entropy", tiny_model, "features.6/bn")
    with pytest.raises(CodecError, match="no learned bottlenecks|no bottleneck"):
        get_codec("entropy", build_model("resnet18", num_classes=3), "layer1")
    with pytest.raises(CodecError, match="needs the model"):
        get_codec("entropy")


def test_saved_and_loaded_checkpoint_gives_identical_bitstreams(tiny_model, tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(tiny_model, path)
    loaded = build_model("shapes_fcos", weights=path, image_size=64)
    assert loaded.fingerprint() == tiny_model.fingerprint()
    image = ShapesDetection("test", 2, size=64)[1][0]
    with torch.inference_mode():
        a = get_codec("entropy", tiny_model, SPLIT).encode(tiny_model.head(image, SPLIT)[0])
        b = get_codec("entropy", loaded, SPLIT).encode(loaded.head(image, SPLIT)[0])
    assert a == b


def test_cdf_tables_that_do_not_match_the_weights_are_refused(tiny_model, tmp_path):
    path = tmp_path / "model.safetensors"
    save_weights(tiny_model, path)
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("entropy_bottleneck.quantiles") and "eb2" in k and "6" in k)
    state[key] = state[key] + 3.0  # the saved CDF tables no longer match these parameters
    save_file(state, str(path))
    with pytest.raises(ValueError, match="CDF tables"):
        build_model("shapes_fcos", weights=path, image_size=64)


def test_bounded_rans_decoder_takes_any_bytes_and_checks_lengths():
    """Any string at all decodes or is refused with a reason; legitimate streams decode exactly."""
    import random

    from splitrt.models import build_model, safe_rans

    model = build_model("shapes_fcos")
    branch = model.branch("features.6/eb2")
    y = torch.randn(1, 24, 7, 9) * 50  # far past the CDFs' support: the encoder clamps, no escapes
    string = branch.compress_latent(y)
    decoded = branch.decompress_latent(string, (7, 9), 24)
    medians = branch.entropy_bottleneck.medians(24, 2)
    tables = branch.entropy_bottleneck.tables()
    expected = safe_rans.clamp_to_support(torch.round(y - medians) + medians, medians, tables)
    assert torch.allclose(decoded, expected)
    low, high = tables.length_bounds(24, 63)
    assert low <= len(string) <= high
    with pytest.raises(safe_rans.RansBoundsError, match="bytes of rANS"):
        branch.decompress_latent(string[:2], (7, 9), 24)
    rng = random.Random(0)
    for _ in range(300):
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(low, min(high, low + 200))))
        try:
            out = branch.decompress_latent(junk, (7, 9), 24)
        except safe_rans.RansBoundsError:
            continue
        assert torch.isfinite(out).all()


def test_branches_follow_the_compressai_contract(tiny_model):
    """forward -> x_hat + likelihoods; compress -> strings + shape; decompress; update; aux_loss;
    load_state_dict sizes the CDF buffers to the saved tables."""
    import copy

    from compressai.models import CompressionModel

    from splitrt.models.bottleneck import BottleneckBranch

    branch = tiny_model.branch(SPLIT)
    assert isinstance(branch, CompressionModel)
    image = ShapesDetection("test", 1, size=64)[0][0]
    batch, _ = tiny_model.preprocess(image)
    with torch.inference_mode():
        out = branch(batch)
        assert out["x_hat"].shape == tiny_model.teacher_prefix(branch.config.cut)(batch).shape
        assert out["likelihoods"]["y"].shape[1] == branch.config.latent_channels
        coded = branch.compress(batch)
        assert len(coded["strings"][0]) == 1 and isinstance(coded["strings"][0][0], bytes)
        restored = branch.decompress(coded["strings"], coded["shape"])["x_hat"]
        assert restored.shape == out["x_hat"].shape
    assert branch.aux_loss().dim() == 0
    fresh = BottleneckBranch(copy.deepcopy(branch.student), branch.decoder[-1].out_channels, branch.config)
    assert not fresh.entropy_bottleneck.ready
    fresh.load_state_dict(branch.state_dict())
    assert fresh.entropy_bottleneck.ready
    with torch.inference_mode():
        again = fresh.eval().decompress(coded["strings"], coded["shape"])["x_hat"]
    torch.testing.assert_close(again, restored)
