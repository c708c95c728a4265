"""Every codec round-trips through bytes; bad payloads raise CodecError with a reason."""

from __future__ import annotations

import io
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from splitrt.codecs import CodecError, get_codec, list_codecs

FEATURE_CODECS = list_codecs("features", model_bound=False)


def features() -> OrderedDict:
    g = torch.Generator().manual_seed(0)
    return OrderedDict(
        x=torch.randn(1, 16, 12, 10, generator=g).relu() * torch.logspace(-2, 2, 16).view(1, 16, 1, 1),
        **{"0": torch.rand(1, 4, 6, 5, generator=g)},
    )


def smooth_image() -> OrderedDict:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    image = torch.stack([yy, xx, (yy + xx) / 2]).unsqueeze(0)
    return OrderedDict(image=torch.round(image * 255) / 255)


def test_registry_lists_the_promised_codecs():
    assert set(FEATURE_CODECS) == {"fp32", "fp32-zstd", "fp16", "fp16-zstd", "int8", "int8-zstd"}
    assert {"jpeg", "png", "webp", "raw"} <= set(list_codecs("image"))
    assert list_codecs("local") == ["local"]
    assert {"entropy", "bottleneck-int8-zstd"} <= set(list_codecs("features"))
    with pytest.raises(CodecError, match="unknown codec"):
        get_codec("bzip9")
    with pytest.raises(CodecError, match="quality"):
        get_codec("jpeg:high")


@pytest.mark.parametrize("name", FEATURE_CODECS)
def test_feature_codecs_round_trip(name):
    codec = get_codec(name)
    src = features()
    decoded = codec.decode(codec.encode(src))
    assert list(decoded) == list(src)
    for key, tensor in src.items():
        assert decoded[key].shape == tensor.shape and decoded[key].dtype == torch.float32
        err = (decoded[key] - tensor).abs()
        if name.startswith("fp32"):
            assert torch.equal(decoded[key], tensor)
        elif name.startswith("fp16"):
            assert float((err / tensor.abs().clamp_min(1e-3)).max()) < 1e-3
        else:  # int8: within half a quantisation step of each channel's range
            span = tensor.amax(dim=(0, 2, 3)) - tensor.amin(dim=(0, 2, 3))
            assert bool((err.amax(dim=(0, 2, 3)) <= span / 255 / 2 + 1e-6).all())


def test_compression_orders_sizes():
    sizes = {name: len(get_codec(name).encode(features())) for name in FEATURE_CODECS}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    elements = sum(t.numel() for t in features().values())
    assert sizes["fp32"] >= 4 * elements and sizes["int8"] >= elements


@pytest.mark.parametrize("name", FEATURE_CODECS)
def test_corrupt_and_truncated_feature_payloads_are_refused(name):
    codec = get_codec(name)
    payload = codec.encode(features())
    for bad in (payload[: len(payload) // 2], payload[:-1], payload[:5], b"", b"JUNKJUNKJUNKJUNK"):
        with pytest.raises(CodecError):
            codec.decode(bad)
    flipped = bytearray(payload)
    flipped[len(flipped) // 2] ^= 0xFF
    with pytest.raises(CodecError):
        codec.decode(bytes(flipped))


def test_zstd_and_plain_bitstreams_are_not_confused():
    with pytest.raises(CodecError, match="zstd"):
        get_codec("fp16").decode(get_codec("fp16-zstd").encode(features()))
    with pytest.raises(CodecError, match="image codec"):
        get_codec("fp32").decode(get_codec("jpeg").encode(smooth_image()))


def test_int8_handles_constant_channels():
    src = OrderedDict(x=torch.zeros(1, 3, 4, 4))
    src["x"][0, 1] = 5.0
    decoded = get_codec("int8").decode(get_codec("int8").encode(src))
    assert torch.equal(decoded["x"], src["x"])


@pytest.mark.parametrize(
    "name,max_err", [("png", 0.0), ("raw", 0.0), ("jpeg", 0.03), ("webp:90", 0.05), ("jpeg:30", 0.1)]
)
def test_image_codecs_round_trip(name, max_err):
    codec = get_codec(name)
    src = smooth_image()
    payload = codec.encode(src)
    decoded = codec.decode(payload)
    assert decoded["image"].shape == src["image"].shape
    assert float((decoded["image"] - src["image"]).abs().mean()) <= max_err
    with pytest.raises(CodecError):
        codec.decode(payload[: len(payload) // 3])


def test_image_codec_decodes_any_format_a_plain_client_sends():
    array = (np.arange(32 * 40 * 3) % 251).astype(np.uint8).reshape(32, 40, 3)
    for fmt in ("PNG", "JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt)
        decoded = get_codec("image").decode(buffer.getvalue())["image"]
        assert decoded.shape == (1, 3, 32, 40)


def test_image_codecs_refuse_feature_tensors_and_local_sends_nothing():
    with pytest.raises(CodecError, match="input"):
        get_codec("jpeg").encode(features())
    with pytest.raises(CodecError, match="sends nothing"):
        get_codec("local").encode(features())


@pytest.mark.parametrize("name", FEATURE_CODECS)
def test_vectors_and_scalars_round_trip(name):
    codec = get_codec(name)
    src = OrderedDict(v=torch.linspace(-3, 5, 37), s=torch.tensor(2.5))
    decoded = codec.decode(codec.encode(src))
    assert decoded["v"].shape == (37,) and decoded["s"].shape == ()
    assert float((decoded["v"] - src["v"]).abs().max()) <= 8 / 255 / 2 + 1e-3
