"""`splitrt bench wire` measures real payloads for every split point x codec."""

from __future__ import annotations

import json

from splitrt.bench import wire
from splitrt.cli import main
from splitrt.codecs import get_codec
from splitrt.edge.frames import to_image_tensor
from splitrt.edge.sources import open_source
from splitrt.models.spec import ModelSpec


def test_bench_wire_covers_every_split_and_codec_with_real_bytes(tmp_path, capsys):
    out = tmp_path / "wire.json"
    assert main(["bench", "wire", "--model", "resnet18", "--frames", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    table = capsys.readouterr().out
    assert "x JPEG90" in table and "layer1" in table
    rows = {(r["split"], r["codec"]): r for r in result["rows"]}
    model = ModelSpec("resnet18", "resnet18").build()
    for split in model.split_points[1:]:
        for codec in wire.FEATURE_CODECS:
            assert (split, codec) in rows
    assert rows[("input", "jpeg:90")]["ratio_to_jpeg90"] == 1.0
    for (_, codec), row in rows.items():
        if codec == "fp32":
            assert row["bytes_mean"] >= 4 * row["elements"]
    # the figure is the length of the encoded payload, not an estimate
    frames = [to_image_tensor(f) for f in open_source("synthetic:8", 2)]
    features, _ = model.head(frames[0], "layer2")
    first = len(get_codec("int8-zstd").encode(features))
    assert rows[("layer2", "int8-zstd")]["bytes_min"] <= first <= rows[("layer2", "int8-zstd")]["bytes_max"]
