"""Device and precision (`modhifi_core.compute`, params `compute`, `--device`/`--dtype`):
every command of every kind runs in bfloat16 when asked (the run records it, the model it
wrote keeps its source's dtype), a bad device or dtype is one line, statistics of a
bfloat16 forward keep float64 sums whose error is far below the ridge. The `gpu` tests
run the same on `cuda` and are skipped without CUDA."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from modhifi_core.compute import place, resolve, restore
from modhifi_core.errors import InputError
from modhifi_core.fidelity import DEFAULT_RIDGE

pytest.importorskip("transformers", reason="the Hugging Face kinds need transformers")

from llm_models import tiny, word_text, word_tokenizer  # noqa: E402

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[gpu, needs_cuda])]


# ---------------------------------------------------------------- the setting


def test_resolve_gives_a_device_and_dtype_and_refuses_anything_else_in_one_line():
    assert resolve("cpu", "bfloat16").describe() == {"device": "cpu", "dtype": "bfloat16"}
    assert resolve().describe() == {"device": "cuda" if CUDA else "cpu", "dtype": "float32"}
    for device, dtype, message in [
        ("gpu", "float32", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("cpu:0", "float32", "device must be auto, cpu, cuda or cuda:N"),
        ("cuda:x", "float32", "device must be auto, cpu, cuda or cuda:N"),
        ("cpu", "float8", "dtype must be one of float32, bfloat16, float16, got 'float8'"),
    ]:
        with pytest.raises(InputError, match=message) as info:
            resolve(device, dtype)
        assert "\n" not in str(info.value)


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_asked_without_cuda_is_one_line(cli, tiny_digits_checkpoint):
    result = cli("evaluate", "--model", tiny_digits_checkpoint, "--device", "cuda")
    assert result.returncode == 2 and "has no CUDA device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_device_or_dtype_is_one_line_on_the_cli_and_in_params(cli, tiny_digits_checkpoint, tmp_path):
    from tasks.params import validate_params

    for flag, value in (("--device", "tpu"), ("--dtype", "float8")):
        result = cli("prune", "--model", tiny_digits_checkpoint, flag, value, "--out", tmp_path / "o.pt")
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert value in result.stderr and not (tmp_path / "o.pt").exists()
    with pytest.raises(InputError, match="compute: dtype.*'float8'|compute.dtype") as info:
        validate_params({"compute": {"device": "cpu", "dtype": "float8"}})
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="compute: device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        validate_params({"compute": {"device": "tpu"}})


def test_every_kind_reads_the_compute_section_and_its_model_stages_declare_it():
    from kinds import kind_class
    from kinds.base import COMPUTE_STAGES

    for name in ("zoo", "causal-lm", "encoder", "image-classification", "torchvision", "python"):
        kind = kind_class(name)(None)
        assert "compute" in kind.sections, name
        for stage in kind.stages:
            assert ("compute" in kind.stage_params(stage)) == (stage in COMPUTE_STAGES), (name, stage)


# ---------------------------------------------------------------- statistics in bfloat16


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_statistics_keep_float64_sums_far_below_the_ridge(device):
    """The same bfloat16 activations: the statistics (products widened to float32, sums in
    float64) match exact float64 arithmetic on them to ~1e-7 of the mean Gram diagonal,
    far below the ridge (1e-4 of it); bfloat16 products would miss by more than the ridge."""
    from modhifi_core.pruning.ffn import FFNStatistics
    from modhifi_core.statistics import _batch_statistics

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32).to(device, torch.bfloat16)
    x = (torch.randn(512, 64) + 0.5).to(device, torch.bfloat16)
    with torch.no_grad():
        y = layer(x)
    stats = _batch_statistics(layer, x, y)
    exact = x.double()
    scale = (exact * exact).sum(0).mean()
    assert (stats.gram_diag.flatten() - (exact * exact).sum(0)).abs().max() / scale < DEFAULT_RIDGE / 100
    residual = y.double() - layer.bias.double()
    assert (stats.cross.squeeze(-1) - residual.T @ exact).abs().max() / scale < DEFAULT_RIDGE / 100
    ffn = FFNStatistics.empty(64)
    ffn.add(x)
    gram = exact.T @ exact
    assert (ffn.gram - gram).abs().max() / scale < DEFAULT_RIDGE / 100
    low = (x.T @ x).double()  # what bfloat16 products would give: the check above can fail
    assert (low - gram).abs().max() / scale > DEFAULT_RIDGE
    conv = torch.nn.Conv2d(4, 8, 3, padding=1).to(device, torch.bfloat16)
    images = (torch.randn(16, 4, 8, 8) + 0.5).to(device, torch.bfloat16)
    with torch.no_grad():
        out = conv(images)
    stats = _batch_statistics(conv, images, out)
    patches = torch.nn.functional.unfold(images.double(), 3, padding=1).view(16, 4, 9, -1)  # (n, c_in, kk, P)
    flat = patches.permute(1, 2, 0, 3).reshape(4, 9, -1)
    exact_gram = flat @ flat.transpose(1, 2)
    scale = exact_gram.diagonal(dim1=1, dim2=2).mean()
    assert (stats.gram_diag - exact_gram).abs().max() / scale < DEFAULT_RIDGE / 100
    residual = out.double() - conv.bias.double().view(1, -1, 1, 1)
    exact_cross = torch.nn.grad.conv2d_weight(images.double(), (8, 4, 3, 3), residual, padding=1).reshape(8, 4, 9)
    assert (stats.cross - exact_cross).abs().max() / scale < DEFAULT_RIDGE / 100


def test_a_bfloat16_forward_gives_statistics_close_to_float32(tiny_digits_checkpoint, digits):
    """The whole statistics pass of a bfloat16 model differs from float32 only by the
    activations' own rounding (a few parts in a thousand), the float64 sums intact."""
    from modhifi_core.checkpoint import load_checkpoint
    from modhifi_core.operations.statistics import collect_statistics

    images = digits.train.images[:128]
    dense = collect_statistics(load_checkpoint(tiny_digits_checkpoint).model, images, batch_size=64)
    low = collect_statistics(load_checkpoint(tiny_digits_checkpoint).model, images, batch_size=64, dtype="bfloat16")
    for name, layer in dense.layers.items():
        other = low.layers[name]
        assert other.gram_diag.dtype == torch.float64
        relative = (other.gram_diag - layer.gram_diag).norm() / layer.gram_diag.norm()
        assert relative < 0.02, (name, float(relative))


# ---------------------------------------------------------------- every kind, through the CLI


def _ran(result, device: str = "cpu", dtype: str = "bfloat16") -> dict:
    assert result.returncode == 0, result.stderr
    metrics = result.json()
    assert (metrics["device"].split(":")[0], metrics["dtype"]) == (device, dtype)
    return metrics


def _float_dtypes(path) -> set[torch.dtype]:
    if path.is_dir():
        with safe_open(str(next(path.glob("*.safetensors"))), "pt") as weights:
            return {weights.get_tensor(k).dtype for k in weights.keys() if weights.get_tensor(k).is_floating_point()}
    state = torch.load(path, weights_only=True)["state_dict"]
    return {t.dtype for t in state.values() if t.is_floating_point()}


def _lineage(path) -> dict:
    if path.is_dir():
        return json.loads((path / "modhifi.json").read_text())
    return torch.load(path, weights_only=True)["metadata"]


@pytest.mark.parametrize("device", DEVICES)
def test_zoo_every_command_in_bfloat16(cli, tiny_digits_checkpoint, tmp_path, device):
    ckpt, flags = tiny_digits_checkpoint, ("--device", device, "--dtype", "bfloat16", "--json")
    _ran(cli("train", "--out", tmp_path / "t.pt", "--epochs", 1, "--width", 4, *flags), device)
    assert _float_dtypes(tmp_path / "t.pt") == {torch.float32}
    syn = _ran(
        cli("synthesize", "--model", ckpt, "--out", tmp_path / "s", "--per-class", 2, "--steps", 3, *flags), device
    )
    assert syn["method"] == "deepinversion" and syn["samples"] == 20
    pruned = tmp_path / "p.pt"
    _ran(
        cli("prune", "--model", ckpt, "--out", pruned, "--calibration-samples", 64, "--latency-repeats", 1, *flags),
        device,
    )
    assert _float_dtypes(pruned) == {torch.float32}
    assert _lineage(pruned)["compute"] == {"device": resolve(device).describe()["device"], "dtype": "bfloat16"}
    unlearned = tmp_path / "u.pt"
    _ran(
        cli("unlearn", "--model", pruned, "--out", unlearned, "--forget-class", 3, "--forget-data", "real", *flags),
        device,
    )
    assert _float_dtypes(unlearned) == {torch.float32}
    tuned = _ran(
        cli("finetune", "--model", unlearned, "--teacher", ckpt, "--out", tmp_path / "f.pt",
            "--data", f"synthetic:{tmp_path / 's'}", "--epochs", 1, *flags),
        device,
    )  # fmt: skip
    assert tuned["forget_accuracy"] == 0.0 and _float_dtypes(tmp_path / "f.pt") == {torch.float32}
    accuracy = _ran(cli("evaluate", "--model", pruned, *flags), device)["test_accuracy"]
    reference = cli("evaluate", "--model", pruned, "--device", device, "--json").json()["test_accuracy"]
    assert abs(accuracy - reference) < 5  # the same weights, rounded to bfloat16


@pytest.fixture(scope="module")
def language_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("compute-language")
    for family in ("llama", "bert"):
        tiny(family).save_pretrained(root / family)
        word_tokenizer().save_pretrained(root / family)
    return root, word_text(root / "text.txt", 2000, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_causal_lm_prune_and_evaluate_in_bfloat16(cli, language_sources, tmp_path, device):
    root, text = language_sources
    flags = ("--device", device, "--dtype", "bfloat16", "--json")
    out = tmp_path / "pruned"
    pruned = _ran(
        cli("prune", "--model", f"hf:{root / 'llama'}", "--target-params", 0.9, "--calibration", f"text:{text}",
            "--calibration-samples", 8, "--length", 16, "--eval-text", text, "--latency-repeats", 1,
            "--out", out, *flags),
        device,
    )  # fmt: skip
    assert pruned["params_ratio"] == pytest.approx(0.9, abs=0.03) and pruned["perplexity"] > 0
    assert _float_dtypes(out) == {torch.float32} and _lineage(out)["compute"]["dtype"] == "bfloat16"
    low = _ran(cli("evaluate", "--model", f"hf:{out}", "--text", text, "--samples", 4, "--length", 16, *flags), device)
    high = cli("evaluate", "--model", f"hf:{out}", "--text", text, "--samples", 4, "--length", 16, "--json").json()
    assert low["perplexity"] == pytest.approx(high["perplexity"], rel=0.05)


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_prune_and_evaluate_in_bfloat16(cli, language_sources, tmp_path, device):
    root, text = language_sources
    flags = ("--device", device, "--dtype", "bfloat16", "--json")
    out = tmp_path / "pruned"
    _ran(
        cli("prune", "--model", f"hf:{root / 'bert'}", "--target-params", 0.95, "--calibration", f"text:{text}",
            "--calibration-samples", 8, "--length", 16, "--latency-repeats", 1, "--out", out, *flags),
        device,
    )  # fmt: skip
    assert _float_dtypes(out) == {torch.float32} and _lineage(out)["compute"]["dtype"] == "bfloat16"
    agreement = _ran(
        cli("evaluate", "--model", f"hf:{out}", "--text", text, "--reference", f"hf:{root / 'bert'}",
            "--samples", 24, *flags),
        device,
    )  # fmt: skip
    assert any(isinstance(v, float) for v in agreement.values())


@pytest.fixture(scope="module")
def resnet_folder(tmp_path_factory, digits):
    from vision_models import trained_resnet

    folder = tmp_path_factory.mktemp("compute-image") / "resnet"
    trained_resnet(digits).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("device", DEVICES)
def test_hf_image_classifier_prune_unlearn_evaluate_in_bfloat16(cli, resnet_folder, tmp_path, device):
    flags = ("--device", device, "--dtype", "bfloat16", "--json")
    source, pruned, unlearned = f"hf:{resnet_folder}", tmp_path / "pruned", tmp_path / "unlearned"
    _ran(
        cli("prune", "--model", source, "--target-flops", 0.6, "--calibration", "gaussian", "--calibration-samples", 32,
            "--latency-repeats", 1, "--out", pruned, *flags),
        device,
    )  # fmt: skip
    assert _float_dtypes(pruned) == {torch.float32} and _lineage(pruned)["compute"]["dtype"] == "bfloat16"
    _ran(cli("unlearn", "--model", source, "--forget-class", 3, "--data", "digits", "--out", unlearned, *flags), device)
    assert _float_dtypes(unlearned) == {torch.float32} and _lineage(unlearned)["compute"]["dtype"] == "bfloat16"
    assert 0 <= _ran(cli("evaluate", "--model", f"hf:{pruned}", "--data", "digits", *flags), device)["test_accuracy"]


NET = """
    from torch import nn


    def build():
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
        )
"""


@pytest.fixture
def python_package(tmp_path, monkeypatch):
    (tmp_path / "computenets").mkdir()
    (tmp_path / "computenets" / "__init__.py").write_text("")
    (tmp_path / "computenets" / "cnn.py").write_text(textwrap.dedent(NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.startswith("computenets")]:
        monkeypatch.delitem(sys.modules, name)
    torch.manual_seed(0)
    from computenets.cnn import build

    save_file(build().eval().state_dict(), str(tmp_path / "cnn.safetensors"))
    return tmp_path


@pytest.mark.parametrize("device", DEVICES)
def test_python_module_prune_unlearn_evaluate_in_bfloat16(cli, python_package, device):
    flags = ("--device", device, "--dtype", "bfloat16", "--json")
    source = ("--model", "python:computenets.cnn:build", "--input-shape", "1,8,8")
    pruned, unlearned = python_package / "pruned", python_package / "unlearned"
    _ran(
        cli("prune", *source, "--weights", "cnn.safetensors", "--calibration", "gaussian", "--calibration-samples", 32,
            "--latency-repeats", 1, "--out", pruned, *flags),
        device,
    )  # fmt: skip
    assert _float_dtypes(pruned) == {torch.float32} and _lineage(pruned)["compute"]["dtype"] == "bfloat16"
    _ran(
        cli(
            "unlearn", *source, "--weights", pruned, "--forget-class", 3, "--data", "digits", "--out", unlearned, *flags
        ),
        device,
    )
    assert _float_dtypes(unlearned) == {torch.float32}
    _ran(cli("evaluate", *source, "--weights", unlearned, "--data", "digits", *flags), device)


# ---------------------------------------------------------------- the engine seam


def test_place_and_restore_keep_the_source_dtype_and_inputs_follow_the_weights():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    place(model, resolve("cpu", "bfloat16"))
    out = model(torch.randn(2, 4))  # float32 input, cast by the pre-hook
    assert out.dtype == torch.bfloat16
    was = restore(model)
    assert was.dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32
    half = torch.nn.Linear(4, 3).to(torch.float16)
    place(half, resolve("cpu", "float32"))
    restore(half)
    assert half.weight.dtype == torch.float16  # a float16 source is saved as float16


def test_the_pipeline_stages_of_a_python_module_run_in_the_params_compute(python_package):
    """The stage runner's seam (`tasks.runner.stage_function`) places what each stage loads
    on params.yaml's `compute`: train_base -> synthesize -> prune -> unlearn -> evaluate in
    bfloat16, the folders written in float32 with bfloat16 in their lineage."""
    from types import SimpleNamespace

    from pipeline_workspace import tiny_params

    from kinds import kind_of
    from tasks.params import validate_params
    from tasks.runner import DeclaredParams, stage_function
    from tasks.workspace import Workspace

    base = validate_params({**tiny_params(), "compute": {"device": "cpu", "dtype": "bfloat16"}})
    params = SimpleNamespace(
        seed=0,
        model=SimpleNamespace(source="python:computenets.cnn:build", weights="cnn.safetensors", input_shape=[1, 8, 8]),
        data=base.data,
        synthesize=base.synthesize.model_copy(update={"per_class": 2, "steps": 3}),
        collect=base.collect.model_copy(update={"samples": 20, "batch_size": 20}),
        prune=base.prune.model_copy(update={"latency_repeats": 1}),
        unlearn=base.unlearn,
        evaluate=base.evaluate.model_copy(update={"relearn_steps": 1}),
        cluster=base.cluster,
        compute=base.compute,
    )
    ws = Workspace(python_package)
    stages = ("train_base", "synthesize", "prune", "unlearn", "evaluate")
    kind = kind_of(params.model.source, ws.root)
    for stage in stages:
        run = stage_function(ws, params, stage)
        run(ws, DeclaredParams(params, kind.stage_params(stage), stage))
    for folder in ("pruned", "unlearned"):
        written = python_package / "outputs" / folder / "hf"
        assert _float_dtypes(written) == {torch.float32}
        assert _lineage(written)["compute"] == {"device": "cpu", "dtype": "bfloat16"}
