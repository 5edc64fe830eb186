"""The torchvision/timm adapter (`kinds.image.TorchvisionKind`) in the main venv, with a
stand-in for the library (torchvision does not import here; the zoo lane runs the real
one): load -> prune -> save -> reload gives the pruned outputs, and the image stages run
on it as the runner calls them, each under the params its StageSpec declares."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kinds import kind_of
from kinds.image import TorchvisionKind
from modhifi_core.errors import InputError


def tiny(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_chans, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )  # fmt: skip


@pytest.fixture
def library(monkeypatch, tmp_path):
    """`torchvision:tiny` built by a stand-in library; its weights (10 classes) in tmp_path."""
    from modhifi_core.sources import torchvision_zoo

    models = SimpleNamespace(get_model=lambda arch, weights=None, **kw: tiny(**kw), list_models=lambda: ["tiny"])
    monkeypatch.setattr(torchvision_zoo, "_import", lambda library: SimpleNamespace(models=models))
    torch.manual_seed(0)
    save_file(tiny(10).state_dict(), str(tmp_path / "tiny.safetensors"))
    return tmp_path


def test_load_prune_save_reload_gives_the_pruned_outputs(library):
    from modhifi_core.data import ArrayDataset
    from modhifi_core.operations.prune_image_classifier import prune_image_classifier

    kind = kind_of("torchvision:tiny")
    assert isinstance(kind, TorchvisionKind) and {"weights", "num_classes", "image_size"} <= set(kind.options["prune"])
    loaded = kind.load(weights=library / "tiny.safetensors", num_classes=10, image_size=16)
    assert loaded.input_shape == (3, 16, 16)
    images = ArrayDataset(torch.randn(32, 3, 16, 16), torch.zeros(32, dtype=torch.int64), 10)
    result = prune_image_classifier(loaded.model, images, target_flops=0.5, latency_repeats=1, latency_batch=2)
    out = kind.save(loaded, result.model, library / "out", {"operation": "prune"})
    again = kind.load(weights=out)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), result.model.eval()(x), rtol=0, atol=0)
    with pytest.raises(InputError, match="--num-classes 7: the model in .* was built with num_classes=10"):
        kind.load(weights=out, num_classes=7)
    with pytest.raises(InputError, match="needs --weights FILE"):
        kind.load()
    with pytest.raises(InputError, match="torchvision has no architecture 'huge'"):
        kind_of("torchvision:huge").check(weights=library / "tiny.safetensors")


def test_the_image_stages_run_a_torchvision_network(library):
    from pipeline_workspace import tiny_params

    from tasks.params import validate_params
    from tasks.runner import DeclaredParams
    from tasks.workspace import Workspace

    base = validate_params(tiny_params())
    model = SimpleNamespace(
        source="torchvision:tiny", weights="tiny.safetensors", num_classes=10, image_size=8, path=None
    )
    params = SimpleNamespace(
        seed=0,
        model=model,
        data=base.data,
        synthesize=base.synthesize,
        collect=base.collect.model_copy(update={"samples": 60, "batch_size": 32}),
        prune=base.prune,
        unlearn=base.unlearn,
        evaluate=base.evaluate.model_copy(update={"relearn_steps": 2}),
        cluster=base.cluster,
    )
    ws = Workspace(library)
    kind = kind_of(model.source, ws.root)
    kind.check_run(params, ws.root)
    metrics = {}
    for stage, spec in kind.stages.items():
        module = importlib.import_module(f"{kind.package}.{stage}")
        metrics[stage] = module.run(ws, DeclaredParams(params, spec.params, stage), kind)
    assert metrics["prune"]["flops_ratio"] == pytest.approx(params.prune.target_flops, abs=0.05)
    assert metrics["evaluate"]["forget_class"] == params.unlearn.forget_class and "UA" in metrics["evaluate"]
    assert kind.load_output(ws, "unlearned").input_shape == (3, 8, 8)
    assert (ws.root / "outputs/unlearned/hf/rebuild.json").is_file()
