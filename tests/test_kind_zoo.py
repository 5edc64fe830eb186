"""The zoo adapter (`kinds.zoo.ZooKind`): what the registry gives for a checkpoint source,
a load -> save -> load round trip, its stage specs against the workspace's artifacts and
the params schema, and bad checkpoints refused in one line."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kinds import kind_of
from kinds.base import STAGES
from kinds.zoo import ZooKind
from modhifi_core.errors import InputError
from tasks.inputs import INPUTS
from tasks.params import Params
from tasks.workspace import ARTIFACTS


@pytest.mark.parametrize("source", [None, "x.pt", "models/base.pt"])
def test_a_checkpoint_source_is_the_zoo_kind(source):
    kind = kind_of(source)
    assert isinstance(kind, ZooKind) and kind.name == "zoo" and kind.source == source


def test_load_save_load_gives_equal_outputs(tiny_digits_checkpoint, tmp_path):
    kind = kind_of(str(tiny_digits_checkpoint))
    loaded = kind.load()
    out = kind.save(loaded, loaded.model, tmp_path / "copy.pt", loaded.metadata)
    again = kind.load(out)
    x = torch.randn(8, loaded.config.in_channels, loaded.config.image_size, loaded.config.image_size)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), again.model(x))
    assert again.config == loaded.config and again.metadata == loaded.metadata
    described = kind.describe(out)
    assert described["kind"] == "zoo" and described["sha256"] == again.sha256
    assert described["input_shape"] == [loaded.config.in_channels, loaded.config.image_size, loaded.config.image_size]
    assert kind.source_files(out) == [out] and kind.inputs(None, tmp_path) == {}


def test_every_stage_applies_in_pipeline_order():
    assert tuple(ZooKind.stages) == STAGES and ZooKind.skipped == {}
    assert all(ZooKind.applies(ZooKind(None), stage) for stage in STAGES)


def test_stage_specs_name_workspace_artifacts_and_params_keys():
    params = Params.every_default().model_dump()
    for name, spec in ZooKind.stages.items():
        for artifact in (*spec.reads, *spec.writes, *spec.metrics, *spec.plots):
            assert artifact in ARTIFACTS or artifact in INPUTS, (name, artifact)
        for key in spec.params:
            tree = params
            for part in key.split("."):
                assert part in tree, (name, key)
                tree = tree[part]
        assert "model.source" not in spec.params and not any(k.startswith("language") for k in spec.params)
        assert not any(a.endswith("_hf") for a in spec.writes + spec.reads), "a zoo run writes no HF folder"
        assert set(key.split(".")[0] for key in spec.params) <= {"seed", "model", "cluster", *ZooKind.sections}


def test_every_cli_option_is_an_option_of_its_command():
    import flows.commands as commands

    for command, options in ZooKind.options.items():
        module = __import__(f"{commands.__name__}.{command}", fromlist=[command])
        parameters = inspect.signature(getattr(module, command)).parameters
        assert set(options) <= set(parameters), (command, set(options) - set(parameters))


@pytest.mark.parametrize("case", ["missing", "garbage", "not_a_checkpoint"])
def test_a_bad_checkpoint_is_one_input_error_line(tmp_path, case):
    path = tmp_path / "bad.pt"
    if case == "garbage":
        path.write_bytes(b"\x00 not a zip")
    elif case == "not_a_checkpoint":
        torch.save({"weights": torch.zeros(2)}, path)
    kind = kind_of(str(path))
    with pytest.raises(InputError) as caught:
        kind.load()
    message = str(caught.value)
    assert str(path) in message and len(message.splitlines()) == 1
    if case == "missing":
        with pytest.raises(InputError, match="checkpoint not found"):
            kind.check()


def test_check_run_refuses_a_missing_model_path_and_accepts_none(tmp_path, tiny_digits_checkpoint):
    kind = ZooKind(None)
    run = SimpleNamespace(model=SimpleNamespace(path=None))
    kind.check_run(run, tmp_path)
    run.model.path = "nope.pt"
    with pytest.raises(InputError, match="model.path: checkpoint not found: nope.pt"):
        kind.check_run(run, tmp_path)
    run.model.path = str(tiny_digits_checkpoint)
    kind.check_run(run, tmp_path)


def test_cli_prune_fills_defaults_from_the_kind(tiny_digits_checkpoint, tmp_path):
    """Nothing but the calibration given: the target, batch and latency repeats are the
    kind's defaults, and what is written is what the metrics say."""
    from kinds.zoo import cli

    kind = kind_of(str(tiny_digits_checkpoint))
    out = tmp_path / "pruned.pt"
    options = {"calibration": "real", "calibration_samples": 64, "latency_repeats": 1, "method": None}
    result = cli.prune(kind, out, options)
    assert result["target_flops"] == kind.defaults.target_value and result["out"] == str(out)
    stored = kind.load(out)
    assert stored.sha256 == result["sha256"] and stored.metadata["params"]["method"] == "modhifi"
    assert abs(result["flops_ratio"] - kind.defaults.target_value) <= 0.02
    json.dumps(result)  # printable


def test_no_literal_defaults_in_the_zoo_cli():
    """The CLI reads defaults from the kind or the operation's signature (issue 22)."""
    text = Path(inspect.getfile(ZooKind)).with_name("cli.py").read_text()
    for literal in ("0.5", "512", "128", "= 100", '"modhifi"', '"synthetic")', "= 50"):
        assert literal not in text, literal
