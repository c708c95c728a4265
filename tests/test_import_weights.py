"""`splitrt import-weights`: a torchvision .pth becomes safetensors that the zoo model loads and runs the same."""

from __future__ import annotations

import torch
import torchvision.models.detection as tvd

from splitrt.cli import main
from splitrt.models import build_model

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


class NotATensor:
    pass


def _torchvision_model() -> torch.nn.Module:
    torch.manual_seed(7)
    return tvd.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128, box_score_thresh=0.0
    ).eval()


def test_a_torchvision_checkpoint_round_trips_into_the_zoo_model(tmp_path, capsys):
    reference = _torchvision_model()
    pth = tmp_path / "frcnn.pth"
    torch.save({"model": {"module." + k: v for k, v in reference.state_dict().items()}, "epoch": 3}, pth)
    out = tmp_path / "frcnn.safetensors"
    options = ["--model-option", "num_classes=3", "--model-option", "min_size=128", "--model-option", "max_size=128"]
    assert main(["import-weights", str(pth), "--arch", ARCH, *options, "--out", str(out)]) == 0
    assert "fingerprint" in capsys.readouterr().out
    model = build_model(ARCH, weights=out, num_classes=3, min_size=128, max_size=128, box_score_thresh=0.0)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.detector.state_dict()[key], value), key
    image = torch.rand(3, 100, 140)
    with torch.inference_mode():
        ours = model.full(image)
        theirs = reference([image])[0]
    torch.testing.assert_close(ours["boxes"], theirs["boxes"])
    torch.testing.assert_close(ours["scores"], theirs["scores"])


def test_a_checkpoint_that_does_not_fit_says_what_differs(tmp_path, capsys):
    pth = tmp_path / "frcnn.pth"
    torch.save(_torchvision_model().state_dict(), pth)
    code = main(["import-weights", str(pth), "--arch", ARCH, "--out", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 2
    assert "shape mismatch" in err and "cls_score" in err and "num_classes" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_only_tensors_are_unpickled(tmp_path, capsys):
    pth = tmp_path / "evil.pth"
    torch.save({"model": NotATensor()}, pth)
    code = main(["import-weights", str(pth), "--arch", ARCH, "--out", str(tmp_path / "x.safetensors")])
    assert code == 2
    assert "not a tensors-only torch checkpoint" in capsys.readouterr().err
