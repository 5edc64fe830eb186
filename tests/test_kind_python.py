"""The `python` kind: a user's own PyTorch module (`python:PACKAGE.MODULE:FACTORY` +
weights + input shape). Load -> prune to half the FLOPs on calibration images -> save ->
reload through the adapter gives the in-memory pruned model's outputs; each refusal is
one line naming what is wrong."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from kinds import kind_of
from kinds.python_module import PythonModuleKind
from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError

NET = """
    from torch import nn


    def build():
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )


    def digits():
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
        )


    def wider():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten())


    def not_a_module():
        return "a string"


    def broken():
        raise ValueError("no such width\\nsecond line")
"""


@pytest.fixture
def package(tmp_path, monkeypatch):
    """`usernets/cnn.py` in tmp_path (on sys.path, and the current folder), and the
    weights of `build()` as safetensors."""
    (tmp_path / "usernets").mkdir()
    (tmp_path / "usernets" / "__init__.py").write_text("")
    (tmp_path / "usernets" / "cnn.py").write_text(textwrap.dedent(NET))
    (tmp_path / "usernets" / "bad.py").write_text("import no_such_package_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.startswith("usernets")]:
        monkeypatch.delitem(sys.modules, name)
    torch.manual_seed(0)
    from usernets.cnn import build

    model = build().eval()
    save_file(model.state_dict(), str(tmp_path / "cnn.safetensors"))
    return tmp_path


def test_the_kind_is_registered_with_the_image_defaults():
    kind = kind_of("python:usernets.cnn:build")
    assert isinstance(kind, PythonModuleKind) and kind.name == "python"
    assert kind.defaults.target == "flops" and kind.defaults.target_value == 0.5
    assert {"weights", "input_shape"} <= set(kind.options["prune"]) and "image_size" not in kind.options["prune"]


def test_load_prune_save_reload_gives_the_pruned_outputs(package):
    from modhifi_core.operations.prune_image_classifier import prune_image_classifier

    kind = kind_of("python:usernets.cnn:build")
    loaded = kind.load(weights=package / "cnn.safetensors", input_shape="3,16,16")
    assert loaded.input_shape == (3, 16, 16) and set(loaded.weights) == {"cnn.safetensors"}
    generator = torch.Generator().manual_seed(0)
    images = ArrayDataset(torch.randn(64, 3, 16, 16, generator=generator), torch.zeros(64, dtype=torch.int64), 10)
    result = prune_image_classifier(loaded.model, images, target_flops=0.5, latency_repeats=1, latency_batch=2)
    assert result.metrics["flops_ratio"] == pytest.approx(0.5, abs=0.05)
    out = kind.save(loaded, result.model, package / "pruned", {"operation": "prune"})
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "modhifi.json", "rebuild.json"]
    record = json.loads((out / "rebuild.json").read_text())
    assert record["source"] == "python:usernets.cnn:build" and record["input_shape"] == [3, 16, 16]
    assert record["layer_shapes"], "the pruned layers' shapes are recorded"
    assert json.loads((out / "modhifi.json").read_text())["operation"] == "prune"

    again = kind.load(weights=out)
    assert again.input_shape == (3, 16, 16)
    x = torch.randn(4, 3, 16, 16, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), result.model.eval()(x), rtol=0, atol=0)
    assert sum(p.numel() for p in again.model.parameters()) < sum(p.numel() for p in loaded.model.parameters())


def test_a_state_dict_file_loads_too(package):
    from usernets.cnn import build

    torch.save(build().state_dict(), package / "cnn.pt")
    loaded = kind_of("python:usernets.cnn:build").load(weights=package / "cnn.pt", input_shape=[3, 16, 16])
    assert loaded.input_shape == (3, 16, 16)


REFUSALS = [
    ("python:usernets.cnn", {}, "is not python:PACKAGE.MODULE:FACTORY"),
    ("python:usernets/cnn:build", {}, "is not python:PACKAGE.MODULE:FACTORY"),
    ("python:usernets.bad:build", {}, "module usernets.bad does not import: No module named 'no_such_package_here'"),
    ("python:usernets.nowhere:build", {}, "module usernets.nowhere does not import"),
    ("python:usernets.cnn:missing", {}, "module usernets.cnn has no factory missing"),
    ("python:usernets.cnn:not_a_module", {}, "not_a_module() returned a str, not a torch nn.Module"),
    ("python:usernets.cnn:broken", {}, "broken() failed: no such width"),
    ("python:usernets.cnn:build", {"weights": "missing.safetensors"}, "missing key '3.weight' (1 missing)"),
    ("python:usernets.cnn:build", {"weights": "nowhere.safetensors"}, "weights nowhere.safetensors does not exist"),
    ("python:usernets.cnn:build", {"weights": "junk.safetensors"}, "unreadable weights file"),
    ("python:usernets.cnn:build", {"weights": "extra.safetensors"}, "unexpected key 'extra'"),
    ("python:usernets.cnn:build", {"weights": "narrow.safetensors"}, "'0.weight' has shape (8, 3, 3, 3) in the file"),
    ("python:usernets.cnn:build", {"weights": None}, "needs --weights FILE"),
    ("python:usernets.cnn:build", {"input_shape": None}, "needs --input-shape C,H,W"),
    ("python:usernets.cnn:build", {"input_shape": "3,16"}, "--input-shape must be C,H,W"),
]


@pytest.mark.parametrize(("source", "change", "message"), REFUSALS, ids=[r[2][:30] for r in REFUSALS])
def test_each_refusal_is_one_line(package, source, change, message):
    from usernets.cnn import build

    state = build().state_dict()
    (package / "junk.safetensors").write_bytes(b"not safetensors")
    save_file({**state, "extra": torch.zeros(1)}, str(package / "extra.safetensors"))
    save_file({**state, "0.weight": torch.zeros(8, 3, 3, 3)}, str(package / "narrow.safetensors"))
    save_file({k: v for k, v in state.items() if k != "3.weight"}, str(package / "missing.safetensors"))
    options = {"weights": "cnn.safetensors", "input_shape": "3,16,16", **change}
    with pytest.raises(InputError) as info:
        kind_of(source).load(**options)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_folder_of_another_source_or_input_shape_is_refused(package):
    from usernets.cnn import build

    kind = kind_of("python:usernets.cnn:build")
    loaded = kind.load(weights="cnn.safetensors", input_shape="3,16,16")
    out = kind.save(loaded, build(), package / "saved", {})
    with pytest.raises(InputError, match="holds a python:usernets.cnn:build model, not python:usernets.cnn:wider"):
        kind_of("python:usernets.cnn:wider").load(weights=out)
    with pytest.raises(InputError, match="the model in .* takes 3,16,16"):
        kind.load(weights=out, input_shape="3,8,8")
    # code beside the weights is never imported: their folder is not put on sys.path
    (package / "models").mkdir()
    (package / "models" / "evil.py").write_text("from torch import nn\n\ndef build():\n    return nn.Linear(1, 1)\n")
    (package / "cnn.safetensors").rename(package / "models" / "cnn.safetensors")
    with pytest.raises(InputError, match="module evil does not import: No module named 'evil'"):
        kind_of("python:evil:build").load(weights=package / "models" / "cnn.safetensors", input_shape="3,16,16")


def test_the_image_commands_take_a_python_module(package):
    """`modhifi prune / evaluate / unlearn --model python:... --weights F --input-shape C,H,W`
    (the command functions the generic CLI calls): the image kind's defaults, the folder
    written back as this kind's, which the next command reads as --weights."""
    from kinds.image import cli

    kind = kind_of("python:usernets.cnn:build")
    source = {"weights": "cnn.safetensors", "input_shape": "3,16,16"}
    given = {"calibration": "gaussian", "calibration_samples": 32, "latency_repeats": 1}
    pruned = cli.prune(kind, package / "pruned", {**source, **given})
    assert pruned["flops_ratio"] == pytest.approx(kind.defaults.target_value, abs=0.05)
    assert pruned["out"] == str(package / "pruned") and (package / "pruned" / "rebuild.json").is_file()
    lineage = json.loads((package / "pruned" / "modhifi.json").read_text())
    assert (
        lineage["params"]["calibration_samples"] == 32 and lineage["params"]["batch_size"] == kind.defaults.batch_size
    )
    measured = cli.evaluate(kind, None, {"weights": package / "pruned", "data": "digits"})
    assert 0 <= measured["test_accuracy"] <= 100 and set(measured["weights"]) == {"model.safetensors"}
    with pytest.raises(InputError, match="give exactly one of target_flops and target_params"):
        cli.prune(kind, package / "o", {**source, "target_flops": 0.5, "target_params": 0.5})
    with pytest.raises(InputError, match="give --data"):
        cli.evaluate(kind, None, source)


def test_the_pipeline_stages_run_a_python_module(package):
    """train_base -> synthesize -> prune -> unlearn -> evaluate -> report of the image kind
    on a python module (stage functions called as the runner calls them; the params'
    `model` section as the python kind reads it: source, weights, input_shape)."""
    from types import SimpleNamespace

    from pipeline_workspace import tiny_params
    from usernets.cnn import digits

    from tasks.params import validate_params
    from tasks.runner import DeclaredParams
    from tasks.workspace import Workspace

    torch.manual_seed(0)
    save_file(digits().state_dict(), str(package / "digits.safetensors"))
    base = validate_params(tiny_params())
    model = SimpleNamespace(source="python:usernets.cnn:digits", weights="digits.safetensors", input_shape=[1, 8, 8])
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
    ws = Workspace(package)
    kind = kind_of(model.source, ws.root)
    kind.check_run(params, ws.root)
    assert list(kind.stages) == ["train_base", "synthesize", "prune", "unlearn", "evaluate", "report"]
    metrics = {}
    for stage, spec in kind.stages.items():  # each stage sees only the params its spec declares
        module = importlib.import_module(f"{kind.package}.{stage}")
        metrics[stage] = module.run(ws, DeclaredParams(params, spec.params, stage), kind)
    assert metrics["prune"]["flops_ratio"] == pytest.approx(params.prune.target_flops, abs=0.05)
    assert metrics["evaluate"]["forget_class"] == params.unlearn.forget_class and "UA" in metrics["evaluate"]
    pruned = kind.load_output(ws, "pruned")
    assert pruned.input_shape == (1, 8, 8) and (ws.root / "outputs/pruned/hf/rebuild.json").is_file()
    assert "collect, score: skipped" in (ws.root / "outputs/report/report.md").read_text()


RUN_REFUSALS = [
    ({"cluster": {"address": "local"}}, "cluster.address: an image classifier's prune collects"),
    ({"unlearn": {"forget_class": None, "forget_random": 0.1}}, "an image classifier forgets a class"),
    ({"model": {"input_shape": None}}, "needs --input-shape C,H,W"),
    ({"model": {"weights": "gone.safetensors"}}, "gone.safetensors does not exist"),
    ({"model": {"source": "python:usernets.cnn:missing"}}, "has no factory missing"),
]


@pytest.mark.parametrize(("change", "message"), RUN_REFUSALS, ids=[r[1][:30] for r in RUN_REFUSALS])
def test_a_run_the_kind_cannot_do_is_refused_before_any_stage(package, change, message):
    from types import SimpleNamespace

    sections = {
        "model": {"source": "python:usernets.cnn:build", "weights": "cnn.safetensors", "input_shape": [3, 16, 16]},
        "cluster": {"address": None},
        "unlearn": {"forget_class": 3, "forget_random": None},
    }
    for section, values in change.items():
        sections[section].update(values)
    params = SimpleNamespace(**{name: SimpleNamespace(**values) for name, values in sections.items()})
    with pytest.raises(InputError) as info:
        kind_of(params.model.source).check_run(params, package)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_params_hold_only_what_the_python_kind_reads(package):
    from tasks.params import check_sections

    model = {"source": "python:usernets.cnn:build", "weights": "cnn.safetensors", "input_shape": [3, 16, 16]}
    sections = {name: {} for name in ("seed", *PythonModuleKind.sections)}
    check_sections({**sections, "model": model}, "params.yaml", package)
    with pytest.raises(
        InputError, match=r"model.num_classes is not read for a python model \(its model keys: source, "
    ):
        check_sections({**sections, "model": {**model, "num_classes": 10}}, "params.yaml", package)
    with pytest.raises(InputError, match="section 'train' is not read by a python model"):
        check_sections({**sections, "model": model, "train": {}}, "params.yaml", package)


@pytest.mark.slow
def test_modhifi_run_on_a_python_module(tmp_path):
    """The whole pipeline (`modhifi run`: DVC, Prefect, MLflow) on a user's module in the
    workspace: params hold only what the kind reads, the outputs reload through the adapter."""
    from pipeline_workspace import image_params, isolated_env, make_workspace, run_pipeline, write_params

    source = "python:usernets.cnn:digits"
    root = make_workspace(tmp_path / "ws", kind_of(source))
    (root / "usernets").mkdir()
    (root / "usernets" / "__init__.py").write_text("")
    (root / "usernets" / "cnn.py").write_text(textwrap.dedent(NET))
    namespace: dict = {}
    exec(textwrap.dedent(NET), namespace)  # noqa: S102 - the test's own module text
    torch.manual_seed(0)
    save_file(namespace["digits"]().state_dict(), str(root / "digits.safetensors"))
    params = image_params(root, forget_class=3)
    params["model"] = {"source": source, "weights": "digits.safetensors", "input_shape": [1, 8, 8]}
    write_params(root, params)
    summary = run_pipeline(root, isolated_env(tmp_path / "home"))
    assert sorted(summary["ran"]) == sorted(PythonModuleKind.stages)
    m = summary["metrics"]
    assert m["flops_ratio"] == pytest.approx(0.5, abs=0.05) and {"UA", "RA", "TA", "MIA"} <= set(m)
    kind = kind_of(source)
    kind.root = root
    for name in ("pruned", "unlearned"):
        folder = root / f"outputs/{name}/hf"
        assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "modhifi.json", "rebuild.json"]
        assert kind.load(weights=folder).input_shape == (1, 8, 8)


def test_the_users_code_is_an_input_of_the_run(package):
    """The module's package is an external input (`inputs/model-code.json`, a dep of
    train_base in the kind's dvc.yaml): an edited factory changes its digest, so the base
    record and every stage after it change; byte-code caches do not count."""
    import yaml

    from tasks.dag import render_dvc_yaml
    from tasks.inputs import INPUTS, digest

    kind = kind_of("python:usernets.cnn:build", package)
    params = type("P", (), {"model": type("M", (), {"weights": "cnn.safetensors", "input_shape": [3, 16, 16]})})
    code = kind.inputs(params, package)["model_code"]
    assert code == package / "usernets"
    before = digest(kind, "model_code", code)
    (package / "usernets" / "__pycache__").mkdir(exist_ok=True)
    (package / "usernets" / "__pycache__" / "cnn.cpython-311.pyc").write_bytes(b"cache")
    assert digest(kind, "model_code", code) == before
    (package / "usernets" / "cnn.py").write_text(textwrap.dedent(NET) + "\n# an edit\n")
    assert digest(kind, "model_code", code)["files"]["cnn.py"] != before["files"]["cnn.py"]
    from pathlib import Path

    stages = yaml.safe_load(render_dvc_yaml(kind, Path(__file__).resolve().parent.parent))["stages"]
    assert INPUTS["model_code"] in stages["train_base"]["deps"]
