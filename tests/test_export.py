"""Exported (TorchScript) heads give the features the Python head gives, on images they were not traced on."""

from __future__ import annotations

import pytest
import torch

from splitrt.data.datasets import ShapesDetection
from splitrt.edge.export import export_head
from splitrt.models import SplitError, build_model


@pytest.mark.parametrize("split,width", [("features.6/eb2", None), ("features.6/slim", 0.5), ("features.3", None)])
def test_exported_shapes_head_matches_the_model(tmp_path, split, width):
    model = build_model("shapes_fcos")
    data = ShapesDetection("test", 3)
    path = export_head(model, split, data[0][0], tmp_path / "head.pt", width=width)
    loaded = torch.jit.load(str(path))
    image = data[2][0][:, :120, :]  # another size than the one traced
    with torch.inference_mode():
        expected, meta = model.head(image, split)
        batch, meta2 = model.preprocess(image)
        got = loaded(batch)
    assert meta == meta2
    assert len(got) == len(expected)
    for tensor, reference in zip(got, expected.values()):
        torch.testing.assert_close(tensor, reference, atol=1e-4, rtol=1e-4)


def test_exported_rcnn_head_and_refusals(tmp_path):
    det = build_model("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=5, min_size=160, max_size=224)
    path = export_head(det, "features.6", torch.rand(3, 120, 160), tmp_path / "det.pt")
    image = torch.rand(3, 100, 180)
    with torch.inference_mode():
        expected, _ = det.head(image, "features.6")
        got = torch.jit.load(str(path))(det.preprocess(image)[0])
    for tensor, reference in zip(got, expected.values()):
        torch.testing.assert_close(tensor, reference, atol=1e-4, rtol=1e-4)
    with pytest.raises(SplitError, match="no head"):
        export_head(det, "input", image, tmp_path / "x.pt")
