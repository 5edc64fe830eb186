"""The pipeline on a torchvision network (`model.source: torchvision:resnet18` +
`model.weights`; the zoo lane, skipped outside .venv/zoo): a real `modhifi run` (Prefect,
DVC, MLflow) on the ResNet-18 that examples/torchvision-resnet/make_model.py trains on
digits at 16 px. The pruned and unlearned folders reload by the stock route (torchvision's
constructor, the layers rebuild.json resizes, `load_state_dict(strict=True)`, no modhifi
import) and measure what evaluate measured; a second run is a no-op; new weights re-run.
A timm ResNet-18 runs the same chain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pipeline_workspace import (
    REPO,
    image_params,
    isolated_env,
    make_workspace,
    modhifi,
    refused_at_start,
    run_pipeline,
    run_without_modhifi,
    write_params,
)
from safetensors.torch import load_file, save_file

from kinds import kind_of
from modhifi_core.data import load_dataset
from modhifi_core.errors import InputError
from modhifi_core.safe_io import sha256_file
from modhifi_core.sources.torchvision_zoo import build_zoo_model, check_source, load_zoo_folder
from tasks.params import validate_params

SOURCE, IMAGE_SIZE = "torchvision:resnet18", 16  # what make_model.py trains
ALL = ["train_base", "synthesize", "prune", "unlearn", "evaluate", "report"]  # the image kind's pipeline

# Stock torchvision/timm + safetensors: rebuild a pruned ResNet from rebuild.json alone,
# then print its predictions on the images of argv[3] (a torch.save'd tensor, weights_only).
STOCK_RELOAD = """
import json, importlib, torch
from pathlib import Path
from safetensors.torch import load_file
from torch import nn
folder = Path(sys.argv[1])
record = json.loads((folder / "rebuild.json").read_text())
library, arch = record["source"].split(":")
module = importlib.import_module(library)
if library == "torchvision":
    model = module.models.get_model(arch, weights=None, **record["build_kwargs"])
else:
    model = module.create_model(arch, pretrained=False, **record["build_kwargs"])
for name, entry in record["layer_shapes"].items():
    old, shape = model.get_submodule(name), entry["weight"]
    if isinstance(old, nn.Conv2d):
        groups = entry["groups"]
        new = nn.Conv2d(shape[1] * groups, shape[0], old.kernel_size, old.stride, old.padding, old.dilation,
                        groups, bias=old.bias is not None)
    elif isinstance(old, nn.BatchNorm2d):
        new = nn.BatchNorm2d(shape[0])
    else:
        new = nn.Linear(shape[1], shape[0], bias=old.bias is not None)
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
images = torch.load(sys.argv[3], weights_only=True)
with torch.no_grad():
    print(json.dumps(model.eval()(images).argmax(1).tolist()))
"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The example's ResNet-18 weights, trained by its make_model.py (~20 s)."""
    out = tmp_path_factory.mktemp("zoo-weights") / "resnet18.safetensors"
    script = REPO / "examples/torchvision-resnet/make_model.py"
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def zoo_params(weights: Path, source: str = SOURCE, **unlearn) -> dict:
    """Tiny params of a run on the ResNet-18 `weights` of `source` (10 classes, 16 px)."""
    params = image_params(weights, **unlearn)
    params["model"].update(source=source, weights=str(weights), num_classes=10, image_size=IMAGE_SIZE)
    return params


def stock_predictions(folder: Path, images: Path, env: dict) -> torch.Tensor:
    """What the network in `folder` predicts on `images`, rebuilt by `STOCK_RELOAD` in an
    interpreter that cannot import modhifi."""
    code = f"import sys\nsys.argv.append({str(images)!r})\n" + STOCK_RELOAD
    return torch.tensor(json.loads(run_without_modhifi(code, folder, env).strip().splitlines()[-1]))


def zoo_env(home: Path) -> dict:
    """`isolated_env` with a `modhifi` launcher of this interpreter on PATH: the stages' command
    (`make test-zoo` writes .venv/zoo/bin/modhifi, which comes first; pytest run directly has none)."""
    env = isolated_env(home)
    launcher = home / "bin" / "modhifi"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m flows.cli "$@"\n')
    launcher.chmod(0o755)
    first, _, rest = env["PATH"].partition(":")
    return {**env, "PATH": ":".join([first, str(launcher.parent), rest])}


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory, weights):
    """One `modhifi run` of the whole chain on the ResNet-18 (data-free: synthetic calibration)."""
    base = tmp_path_factory.mktemp("zoo-run")
    root = make_workspace(base / "ws", kind_of(SOURCE))
    write_params(root, zoo_params(weights, forget_class=3))
    env = zoo_env(base / "home")
    return root, env, run_pipeline(root, env)


def test_zoo_pipeline_end_to_end(zoo_run, weights):
    root, _, summary = zoo_run
    assert sorted(summary["ran"]) == sorted(ALL)
    m = summary["metrics"]
    assert m["components"] == "channels" and m["flops_ratio"] == pytest.approx(0.5, abs=0.03)
    assert m["params_ratio"] < 0.9 and m["base_test_accuracy"] > 80
    assert {"pruned_test_accuracy", "unlearned_test_accuracy", "UA", "RA", "TA", "MIA"} <= set(m)
    assert m["forget_class"] == 3 and summary["skipped_reasons"] == kind_of(SOURCE).skipped

    base = json.loads((root / "outputs/base/metrics.json").read_text())
    assert base["source"] == SOURCE and base["files"] == {weights.name: sha256_file(weights)}
    for name in ("pruned", "unlearned"):
        folder = root / f"outputs/{name}/hf"
        assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "modhifi.json", "rebuild.json"]
    pruned = json.loads((root / "outputs/pruned/hf/modhifi.json").read_text())
    assert pruned["operation"] == "prune" and pruned["parents"]["source_files"] == base["files"]
    assert pruned["parents"]["base_model"] == sha256_file(root / "outputs/base/model.pt")
    assert "## Image classifier" in (root / "outputs/report/report.md").read_text()


def test_outputs_reload_by_the_stock_route_and_measure_the_same(zoo_run, tmp_path):
    root, env, summary = zoo_run
    digits = load_dataset("digits", image_size=IMAGE_SIZE, channels=3)
    images = tmp_path / "test_images.pt"
    torch.save(digits.test.images, images)
    for name in ("pruned", "unlearned"):
        folder = root / f"outputs/{name}/hf"
        record = json.loads((folder / "rebuild.json").read_text())
        assert record["source"] == SOURCE and record["layer_shapes"], "pruned layers are recorded"
        predicted = stock_predictions(folder, images, env)
        correct = 100.0 * float((predicted == digits.test.labels).float().mean())  # as training.accuracy
        assert correct == pytest.approx(summary["metrics"][f"{name}_test_accuracy"], abs=1e-6)
        state = load_file(str(folder / "model.safetensors"))
        assert load_zoo_folder(folder).state_dict().keys() == state.keys()


def test_lineage_walks_the_unlearned_folder_back_to_the_weights_file(zoo_run, weights):
    root, env, _ = zoo_run
    result = modhifi(root, env, "lineage", "outputs/unlearned/hf", "--verify", "--format", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["verified"] is True, record["problems"]
    links = {(link["role"], Path(link["parent"]).resolve()) for link in record["chain"]}
    assert ("pruned_model", (root / "outputs/pruned/model.pt").resolve()) in links
    assert (f"source file {weights.name}", weights.resolve()) in links


def test_a_second_run_is_a_no_op(zoo_run):
    root, env, _ = zoo_run
    again = run_pipeline(root, env)
    assert again["ran"] == [] and sorted(again["skipped"]) == sorted(ALL)


def test_new_weights_rerun_from_train_base(zoo_run, weights):
    """After the tests that read the run's outputs: it changes the weights file they name."""
    root, env, _ = zoo_run
    state = load_file(str(weights))
    state["fc.bias"] = state["fc.bias"] + 0.01
    save_file(state, str(weights))
    again = run_pipeline(root, env)
    assert sorted(again["ran"]) == sorted(ALL)
    base = json.loads((root / "outputs/base/metrics.json").read_text())
    assert base["files"] == {weights.name: sha256_file(weights)}


def test_modhifi_run_refuses_an_unknown_architecture_before_any_stage(weights, tmp_path):
    root = make_workspace(tmp_path / "ws", kind_of("torchvision:resnet19"))
    params = zoo_params(weights)
    params["model"]["source"] = "torchvision:resnet19"
    write_params(root, params)
    assert "torchvision has no architecture 'resnet19'" in refused_at_start(root, zoo_env(tmp_path / "home"))


def test_example_params_are_complete_and_valid(weights):
    raw = yaml.safe_load((REPO / "examples/torchvision-resnet/params.yaml").read_text())
    assert set(raw) - {"cluster", "schedule"} == {"seed", "model", *kind_of(SOURCE).sections}
    assert raw["model"]["source"] == SOURCE and raw["model"]["image_size"] == IMAGE_SIZE
    assert raw["model"]["weights"] == "examples/torchvision-resnet/resnet18.safetensors"
    raw["model"]["weights"] = str(weights)
    assert validate_params(raw).model.num_classes == 10


@pytest.mark.parametrize("source", ["torchvision:resnet19", "timm:resnet19"])
def test_an_unknown_architecture_is_one_line(source):
    with pytest.raises(InputError, match=f"{source.split(':')[0]} has no architecture 'resnet19'") as info:
        check_source(source)
    assert "\n" not in str(info.value)


def test_timm_resnet18_through_the_whole_pipeline(tmp_path):
    """`timm:resnet18` (random weights: the chain, not the accuracy) pruned, unlearned and
    evaluated by `modhifi run` (~75 s); the pruned folder rebuilds with stock timm."""
    torch.manual_seed(0)
    weights = tmp_path / "timm-resnet18.safetensors"
    save_file(build_zoo_model("timm:resnet18", num_classes=10).state_dict(), str(weights))
    root = make_workspace(tmp_path / "ws", kind_of("timm:resnet18"))
    write_params(root, zoo_params(weights, "timm:resnet18", forget_class=3))
    env = zoo_env(tmp_path / "home")
    summary = run_pipeline(root, env)
    assert sorted(summary["ran"]) == sorted(ALL)
    m = summary["metrics"]
    assert m["flops_ratio"] == pytest.approx(0.5, abs=0.03) and {"UA", "RA", "TA", "MIA"} <= set(m)
    digits = load_dataset("digits", image_size=IMAGE_SIZE, channels=3)
    images = tmp_path / "test_images.pt"
    torch.save(digits.test.images, images)
    predicted = stock_predictions(root / "outputs/pruned/hf", images, env)
    correct = float((predicted == digits.test.labels).float().mean() * 100)
    assert correct == pytest.approx(m["pruned_test_accuracy"], abs=1e-6)
