"""params.yaml validation: one line naming the key, exit code 2 from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kinds.language import CausalLMKind
from kinds.zoo import ZooKind
from modhifi_core.errors import InputError
from tasks.params import Params, load_params

REPO = Path(__file__).resolve().parent.parent


def test_committed_params_yaml_lists_every_knob_of_the_zoo_kind():
    """The repository's params.yaml (make run) is a zoo run's: exactly the zoo's sections,
    every key of each, and only the model keys a zoo model reads."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    defaults = Params.every_default().model_dump()
    assert set(raw) == {"seed", "model", "cluster", "schedule", *ZooKind.sections}
    for section, values in raw.items():
        if section == "model":
            assert set(values) == set(ZooKind.model_keys)
        elif isinstance(values, dict):
            assert set(values) == set(defaults[section]), section


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
        ({"bogus": 1}, "unknown section 'bogus'"),
        ({"language": {"samples": 8}}, "section 'language' is not read by a zoo model (its sections: seed, model, "),
        ({"model": {"weights": "w.pt"}}, "model.weights is not read for a zoo model (its model keys: source, path,"),
        ({"model": {"source": "foo:bar"}}, "model source 'foo:bar' is not one of FILE.pt (a modhifi checkpoint),"),
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
    assert Params.every_default().model_dump()["prune"]["target_flops"] == 0.5


def test_a_missing_section_of_the_kind_is_one_line(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["prune"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError) as info:
        load_params(tmp_path / "params.yaml")
    assert str(info.value) == f"{tmp_path / 'params.yaml'}: missing section(s) prune (a zoo model reads them)"


def test_a_language_models_params_hold_only_its_sections(tmp_path):
    """The sections follow the kind `model.source` names: a causal LM reads `language`
    (its defaults the kind's: 128 calibration windows), not the zoo's image sections."""
    from llm_models import tiny

    tiny("llama").save_pretrained(tmp_path / "llama")
    params = {"seed": 0, "model": {"source": "hf:llama"}, "language": {"eval_text": "t.txt"}, "compute": {}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    loaded = load_params(tmp_path / "params.yaml")
    assert loaded.language.samples == CausalLMKind.defaults.calibration_samples == 128
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "data": {"dataset": "digits"}}))
    with pytest.raises(InputError) as info:
        load_params(tmp_path / "params.yaml")
    assert str(info.value) == (
        f"{tmp_path / 'params.yaml'}: section 'data' is not read by a causal-lm model "
        "(its sections: seed, model, language, compute)"
    )


def test_torchvision_params_keep_the_library_and_the_weights_to_run_start(tmp_path):
    """Loading params of a torchvision/timm source imports neither library; its weights and
    library are the kind's run-start checks (`check_run`), each one line."""
    from kinds import kind_of

    (tmp_path / "w.pt").write_bytes(b"")
    image = {"data", "synthesize", "collect", "prune", "unlearn", "evaluate", "compute"}
    raw = {k: v for k, v in yaml.safe_load((REPO / "params.yaml").read_text()).items() if k in image | {"seed"}}
    raw["model"] = {"source": "timm:resnet18", "weights": "w.pt"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    assert params.model.weights == "w.pt" and params.model.num_classes is None and params.model.image_size is None
    kind = kind_of(params.model.source, tmp_path)
    raw["model"]["weights"] = "missing.safetensors"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError) as info:
        kind.check_run(load_params(tmp_path / "params.yaml"), tmp_path)
    assert str(info.value) == f"weights {tmp_path / 'missing.safetensors'} does not exist"
