"""The catalogue that listings and early validation use agrees with the registries it mirrors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from splitrt.catalog import CODECS, MODELS, check_names
from splitrt.codecs import list_codecs
from splitrt.codecs.base import codec_kind
from splitrt.models import list_models
from splitrt.models.spec import ModelSpec
from splitrt.models.zoo import _REGISTRY


def test_every_registered_model_is_catalogued_with_its_task_and_splits():
    assert sorted(MODELS) == list_models()
    for name in list_models():
        with torch.device("meta"):  # the structure without the weights: fast
            model = _REGISTRY[name](tv_weights=None)
        assert MODELS[name].task == model.task, name
        assert MODELS[name].splits == tuple(model.split_points), name


def test_every_registered_codec_is_catalogued_with_its_kind():
    assert sorted(CODECS) == sorted(list_codecs())
    for name in list_codecs():
        assert CODECS[name].kind == codec_kind(name), name


@pytest.mark.parametrize("command", ["models", "codecs", "--help"])
def test_listings_do_not_import_torch(command):
    code = (
        f"import sys\nfrom splitrt.cli import main\ntry:\n    main([{command!r}])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'the listing imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    if command == "models":
        assert "shapes_fcos" in done.stdout and "features.6/eb2" in done.stdout
    if command == "codecs":
        assert "entropy" in done.stdout and "features" in done.stdout


def test_connect_refuses_a_bad_split_or_codec_before_building_anything(monkeypatch):
    import splitrt

    def no_build(self):
        raise AssertionError("the model was built before its names were checked")

    monkeypatch.setattr(ModelSpec, "build", no_build)
    with pytest.raises(ValueError, match="no split 'features.7'.*features.6/eb2"):
        splitrt.connect("127.0.0.1:1", "shapes_fcos", split="features.7", codec="entropy")
    with pytest.raises(ValueError, match="unknown codec 'jpg'"):
        splitrt.connect("127.0.0.1:1", "shapes_fcos", split="input", codec="jpg")
    with pytest.raises(ValueError, match="unknown model architecture"):
        splitrt.connect("127.0.0.1:1", "shapes_fcoss")


def test_check_names_accepts_parametric_codecs_and_unknown_user_models():
    check_names("shapes_fcos", "input", "jpeg:50")
    check_names("my_own_model", "anything", "int8")  # left for the registry to judge
