"""params.yaml validation: one line naming the key, exit code 2 from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modhifi_core.errors import InputError
from tasks.params import Params, load_params

REPO = Path(__file__).resolve().parent.parent


def test_committed_params_yaml_lists_every_knob():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    defaults = Params().model_dump()
    assert set(raw) == set(defaults)
    for section, values in defaults.items():
        if isinstance(values, dict):
            assert set(raw[section]) == set(values), section


def _write(tmp_path, raw):
    """The committed params.yaml with `raw`'s sections merged in (every section is required)."""
    full = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in raw.items():
        full[section] = {**full[section], **values} if isinstance(full.get(section), dict) else values
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(full))
    return path


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"prune": {"target_flop": 0.5}}, "unknown key 'prune.target_flop'"),
        ({"prune": {"target_flops": "half"}}, "prune.target_flops: input should be a valid number"),
        (
            {"prune": {"target_flops": 1.5}},
            "prune.target_flops: target_flops must be a fraction strictly between 0 and 1, got 1.5",
        ),
        ({"unlearn": {"forget_class": -1}}, "unlearn.forget_class: input should be greater than or equal to 0"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"train": {"epochs": 0}}, "train.epochs"),
    ],
)
def test_bad_values_name_the_key(tmp_path, raw, message):
    with pytest.raises(InputError) as info:
        load_params(_write(tmp_path, raw))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_not_yaml_and_missing_file(tmp_path):
    (tmp_path / "params.yaml").write_text("prune: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(InputError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_defaults_are_complete():
    assert Params().model_dump()["prune"]["target_flops"] == 0.5


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"weights": None}, "model: source torchvision:resnet18 needs weights"),
        ({"weights": "missing.safetensors"}, "model: weights missing.safetensors does not exist"),
        ({"source": "torchvision:"}, "model: source 'torchvision:' names no architecture"),
        ({"source": "timm:resnet18", "path": "base.pt"}, "model: path (a zoo checkpoint) contradicts source timm"),
        ({"source": None}, "model: weights is for a torchvision:ARCH / timm:ARCH source; set model.source"),
        ({"source": "hf:.", "weights": None, "num_classes": 10}, "model: num_classes is for a torchvision:ARCH"),
    ],
)
def test_zoo_source_params_are_one_line(tmp_path, model, message):
    """torchvision:ARCH / timm:ARCH need an existing weights file (relative to the params
    file's folder, the workspace); the zoo-only keys are refused with any other source."""
    (tmp_path / "resnet18.safetensors").write_bytes(b"")  # existence is what params can check
    zoo = {"source": "torchvision:resnet18", "weights": "resnet18.safetensors", "num_classes": 10, "image_size": 16}
    with pytest.raises(InputError) as info:
        load_params(_write(tmp_path, {"model": {**zoo, **model}}))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_zoo_source_params_validate_with_the_library_left_to_run_start(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"")
    params = load_params(_write(tmp_path, {"model": {"source": "timm:resnet18", "weights": "w.pt"}}))
    assert params.model.weights == "w.pt" and params.model.num_classes is None and params.model.image_size is None
