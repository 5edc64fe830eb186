"""One conformance suite over every model kind (scikit-learn's `parametrize_with_checks` is
the model): each registered kind, on a tiny source of its own, must

- be found by the registry (`kinds.kind_of`) from its source string;
- prune through its own command (`<kind.package>.cli.prune`, the call every `modhifi prune`
  makes) and write a model that reloads — with the stock library, outside modhifi, where the
  kind's library allows, and through the adapter otherwise — to outputs equal to the pruned
  model the command held in memory;
- refuse a bad target, a missing source file and an option of another kind, each in one
  line whose text is asserted;
- declare only CLI options its commands have, stages whose reads/writes are workspace
  artifacts, and describe its artifacts.

A new kind adds one `Case` below; nothing else in this file changes.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from kinds import REGISTRY, kind_class, kind_of
from kinds.base import STAGES
from tasks.inputs import INPUTS
from tasks.workspace import ARTIFACTS

TEXT = ("the word of the day is what you can use . he said it was for all of us , " * 40).strip()


@dataclass
class Case:
    """A kind's tiny source and how to look at what it writes.

    Args:
        kind: the registered kind name.
        make: `make(folder) -> source string` writes the source under `folder`.
        prune: `prune(folder) -> options` of `modhifi prune` (typer names; seed included).
        reload: `reload(out, folder) -> nn.Module-like` the written model through modhifi.
        probe: `probe(model) -> Tensor`: outputs on a fixed input.
        stock: a Python snippet that loads `sys.argv[1]` with the source's own library,
            without modhifi, and prints the probe outputs as JSON (None: no such library).
        bad_target: (options, message) of a target out of range.
        missing: (source under `folder`, message) of a source whose file is missing.
        foreign: an option of `modhifi prune` this kind does not take.
    """

    kind: str
    make: Callable[[Path], str]
    prune: Callable[[Path], dict]
    reload: Callable[[Path, Path], object]
    probe: Callable[[object], torch.Tensor]
    stock: str | None
    bad_target: tuple[dict, str]
    missing: Callable[[Path], tuple[str, str]]
    foreign: str
    marks: list = field(default_factory=list)


# ---------------------------------------------------------------- the zoo: a modhifi checkpoint


def _zoo_source(folder: Path) -> str:
    from modhifi_core.checkpoint import save_checkpoint
    from modhifi_core.data import data_spec
    from modhifi_core.models import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(name="resnet18", width=4, image_size=8, in_channels=1)
    save_checkpoint(folder / "zoo.pt", build_model(config).eval(), config, metadata={"data": data_spec()})
    return str(folder / "zoo.pt")


def _zoo_probe(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)))


ZOO = Case(
    kind="zoo",
    make=_zoo_source,
    prune=lambda folder: {"target_flops": 0.5, "calibration_samples": 32, "latency_repeats": 1, "seed": 0},
    reload=lambda out, folder: kind_of(str(out)).load().model,
    probe=_zoo_probe,
    stock=None,  # a modhifi checkpoint is its own format
    bad_target=(
        {"target_flops": 1.5},
        "--target-flops: target_flops must be a fraction strictly between 0 and 1, got 1.5",
    ),
    missing=lambda folder: (str(folder / "nope.pt"), f"checkpoint not found: {folder / 'nope.pt'}"),
    foreign="target_params",
)

# ---------------------------------------------------------------- Hugging Face language models


def _hf_folder(family: str) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        from llm_models import tiny, word_tokenizer

        tiny(family).save_pretrained(folder / family)
        word_tokenizer().save_pretrained(folder / family)
        (folder / "text.txt").write_text(TEXT)
        return f"hf:{folder / family}"

    return make


def _token_probe(model: torch.nn.Module) -> torch.Tensor:
    from llm_models import example_inputs, outputs

    return outputs(model, example_inputs("llama"))


def _stock_text(auto_class: str, field: str) -> str:
    return (
        "import json, sys, torch, transformers\n"
        f"m = transformers.{auto_class}.from_pretrained(sys.argv[1]).eval()\n"
        "ids = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(1))\n"
        "with torch.no_grad():\n"
        f"    out = m(input_ids=ids).{field}\n"
        "assert not any(name.startswith(('modhifi_core', 'kinds', 'tasks', 'flows')) for name in sys.modules)\n"
        "print(json.dumps(out.tolist()))\n"
    )


def _language_prune(folder: Path) -> dict:
    text = f"text:{folder / 'text.txt'}"
    return {"target_params": 0.9, "calibration": text, "calibration_samples": 8, "length": 16, "seed": 0}


CAUSAL_LM = Case(
    kind="causal-lm",
    make=_hf_folder("llama"),
    prune=_language_prune,
    reload=lambda out, folder: kind_of(f"hf:{out}").load().model,
    probe=_token_probe,
    stock=_stock_text("AutoModelForCausalLM", "logits"),
    bad_target=({"target_params": 1.5}, "target_params must be a fraction strictly between 0 and 1, got 1.5"),
    missing=lambda folder: (f"hf:{folder / 'nope'}", f"model folder {folder / 'nope'} does not exist"),
    foreign="target_flops",
)

ENCODER = Case(
    kind="encoder",
    make=_hf_folder("bert"),
    prune=_language_prune,
    reload=lambda out, folder: kind_of(f"hf:{out}").load().model,
    probe=_token_probe,
    stock=_stock_text("AutoModel", "last_hidden_state"),
    bad_target=(
        {"ffn_fraction": 0.0, "calibration": "text:x"},
        "fraction must be a fraction strictly between 0 and 1, got 0.0",
    ),
    missing=lambda folder: (f"hf:{folder / 'nope'}", f"model folder {folder / 'nope'} does not exist"),
    foreign="weights",
)

# ---------------------------------------------------------------- image classifiers


def _hf_resnet(folder: Path) -> str:
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(
        num_channels=1, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10,
        image_size=16,
    )  # fmt: skip
    ResNetForImageClassification(config).eval().save_pretrained(folder / "resnet")
    return f"hf:{folder / 'resnet'}"


def _pixels(channels: int) -> torch.Tensor:
    return torch.randn(4, channels, 16, 16, generator=torch.Generator().manual_seed(1))


def _hf_image_probe(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(pixel_values=_pixels(1)).logits


STOCK_IMAGE = (
    "import json, sys, torch, transformers\n"
    "m = transformers.AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()\n"
    "x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))\n"
    "with torch.no_grad():\n"
    "    out = m(pixel_values=x).logits\n"
    "assert not any(name.startswith(('modhifi_core', 'kinds', 'tasks', 'flows')) for name in sys.modules)\n"
    "print(json.dumps(out.tolist()))\n"
)
IMAGE_PRUNE = {"target_flops": 0.6, "calibration": "gaussian", "calibration_samples": 16, "latency_repeats": 1}

HF_CNN = Case(
    kind="image-classification",
    make=_hf_resnet,
    prune=lambda folder: {**IMAGE_PRUNE, "seed": 0},
    reload=lambda out, folder: kind_of(f"hf:{out}").load().model,
    probe=_hf_image_probe,
    stock=STOCK_IMAGE,
    bad_target=({"target_flops": 1.5}, "target_flops must be a fraction strictly between 0 and 1, got 1.5"),
    missing=lambda folder: (f"hf:{folder / 'nope'}", f"model folder {folder / 'nope'} does not exist"),
    foreign="weights",
)


def _hf_vit(folder: Path) -> str:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=10,
    )  # fmt: skip
    ViTForImageClassification(config).eval().save_pretrained(folder / "vit")
    return f"hf:{folder / 'vit'}"


HF_VIT = Case(
    kind="image-classification",
    make=_hf_vit,
    prune=lambda folder: {**IMAGE_PRUNE, "target_flops": None, "target_params": 0.9, "seed": 0},
    reload=lambda out, folder: kind_of(f"hf:{out}").load().model,
    probe=_hf_image_probe,
    stock=STOCK_IMAGE,
    bad_target=({"target_params": 0.0}, "target_params must be a fraction strictly between 0 and 1, got 0.0"),
    missing=lambda folder: (f"hf:{folder / 'nope.d'}", f"model folder {folder / 'nope.d'} does not exist"),
    foreign="input_shape",
)


def _hf_swin(folder: Path) -> str:
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(0)
    config = SwinConfig(
        image_size=16, patch_size=2, num_channels=1, embed_dim=16, depths=[2, 1], num_heads=[1, 2], window_size=4,
        num_labels=10,
    )  # fmt: skip
    SwinForImageClassification(config).eval().save_pretrained(folder / "swin")
    return f"hf:{folder / 'swin'}"


HF_SWIN = Case(
    kind="image-classification",
    make=_hf_swin,
    prune=lambda folder: {**IMAGE_PRUNE, "target_flops": 0.8, "seed": 0},
    reload=lambda out, folder: kind_of(f"hf:{out}").load().model,
    probe=_hf_image_probe,
    stock=STOCK_IMAGE,
    bad_target=({"target_flops": 0.0}, "target_flops must be a fraction strictly between 0 and 1, got 0.0"),
    missing=lambda folder: (f"hf:{folder / 'swin'}", f"model folder {folder / 'swin'} does not exist"),
    foreign="ffn_fraction",
)

USER_MODULE = """
from torch import nn


def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
"""


def _python_module(folder: Path) -> str:
    """`conformance_net.py` in `folder` (put on sys.path: the user's workspace), its weights."""
    from safetensors.torch import save_file

    (folder / "conformance_net.py").write_text(USER_MODULE)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    sys.modules.pop("conformance_net", None)
    torch.manual_seed(0)
    save_file(importlib.import_module("conformance_net").build().state_dict(), str(folder / "net.safetensors"))
    return "python:conformance_net:build"


def _python_probe(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(_pixels(3))


PYTHON = Case(
    kind="python",
    make=_python_module,
    prune=lambda folder: {**IMAGE_PRUNE, "weights": folder / "net.safetensors", "input_shape": "3,16,16", "seed": 0},
    reload=lambda out, folder: kind_of("python:conformance_net:build").load(weights=out).model,
    probe=_python_probe,
    stock=None,  # the user's own module: reloaded through the adapter (factory + shape record + state dict)
    bad_target=(
        {"target_flops": 1.5},
        "target_flops must be a fraction strictly between 0 and 1, got 1.5",
    ),
    missing=lambda folder: (
        "python:conformance_net:build",
        "python:conformance_net:build needs --weights FILE (safetensors or a state dict)",
    ),
    foreign="eval_text",
)


def _zoo_lane_missing() -> str | None:
    """Why torchvision/timm cannot run here (None: they can). They import only in the zoo
    lane's venv (`make test-zoo`); beside the main venv's torch torchvision fails to import."""
    for name in ("torchvision", "timm"):
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or torchvision's operator error beside torch 2.13
            return f"zoo lane: {name} unavailable here ({type(exc).__name__}); make test-zoo runs this case"
    return None


ZOO_LANE = [pytest.mark.skipif(_zoo_lane_missing() is not None, reason=str(_zoo_lane_missing()))]


def _library_source(source: str, **build_kwargs) -> Callable[[Path], str]:
    """`make` for a torchvision/timm architecture: random weights as safetensors beside it."""

    def make(folder: Path) -> str:
        from safetensors.torch import save_file

        from modhifi_core.sources.torchvision_zoo import build_zoo_model

        torch.manual_seed(0)
        save_file(build_zoo_model(source, **build_kwargs).state_dict(), str(folder / "net.safetensors"))
        return source

    make.__name__ = source.replace(":", "_")
    return make


def _library_case(source: str, foreign: str, **build_kwargs) -> Case:
    return Case(
        kind="torchvision",
        make=_library_source(source, **build_kwargs),
        prune=lambda folder: {
            **IMAGE_PRUNE,
            "weights": folder / "net.safetensors",
            "num_classes": 10,
            "image_size": 16,
            "seed": 0,
        },  # fmt: skip
        reload=lambda out, folder: kind_of(source).load(weights=out).model,
        probe=_python_probe,
        stock=None,  # pruned widths no stock constructor builds: rebuilt through the adapter (rebuild.json)
        bad_target=({"target_flops": 1.5}, "target_flops must be a fraction strictly between 0 and 1, got 1.5"),
        missing=lambda folder: (
            source,
            f"{source} needs --weights FILE (safetensors or a state dict); nothing is downloaded",
        ),
        foreign=foreign,
        marks=ZOO_LANE,
    )


TORCHVISION = _library_case("torchvision:resnet18", "input_shape", num_classes=10)
TIMM = _library_case("timm:resnet10t", "ffn_fraction", num_classes=10)

CASES = [ZOO, CAUSAL_LM, ENCODER, HF_CNN, HF_VIT, HF_SWIN, PYTHON, TORCHVISION, TIMM]


def test_every_registered_kind_has_a_case():
    assert {case.kind for case in CASES} == set(REGISTRY)


def _case_id(case: Case) -> str:
    return case.make.__name__.strip("_") if case.kind in ("image-classification", "torchvision") else case.kind


@pytest.fixture(params=[pytest.param(case, marks=case.marks, id=_case_id(case)) for case in CASES])
def case(request):
    return request.param


@pytest.fixture
def source(case, tmp_path):
    return case.make(tmp_path)


def test_the_registry_finds_the_kind(case, source):
    assert kind_of(source).name == case.kind
    assert type(kind_of(source)) is kind_class(case.kind)


def test_prune_save_and_reload_give_the_model_in_memory(case, source, tmp_path, monkeypatch):
    """The kind's own prune command; the model it hands to `save` is what reloads. A kind
    that prunes layer by layer (`layerwise`: no whole model to hand over) writes the folder
    itself; its reload through the adapter and through stock code agree (its equality with
    the in-memory path: tests/test_llm_layerwise.py)."""
    kind = kind_of(source)
    held = {}
    save = kind.save

    def keep(loaded, model, out, lineage, *more, **named):
        held["model"] = model
        return save(loaded, model, out, lineage, *more, **named)

    monkeypatch.setattr(kind, "save", keep)
    out = tmp_path / ("pruned.pt" if kind.output == "file" else "pruned")
    metrics = importlib.import_module(f"{kind.package}.cli").prune(kind, out, case.prune(tmp_path))
    assert Path(metrics["out"]) == out and out.exists()
    assert ("model" in held) != getattr(kind, "layerwise", False)
    expected = case.probe(held["model"] if "model" in held else case.reload(out, tmp_path))
    assert torch.equal(case.probe(case.reload(out, tmp_path)), expected)
    if case.stock is not None:
        stock = subprocess.run(
            [sys.executable, "-I", "-c", case.stock, str(out)], capture_output=True, text=True, timeout=300
        )
        assert stock.returncode == 0, stock.stderr[-2000:]
        torch.testing.assert_close(torch.tensor(json.loads(stock.stdout)), expected, rtol=1e-5, atol=1e-6)
    assert kind.describe(out)["kind"] == case.kind


def _refusal(cli, source: str, options: dict, out: Path) -> str:
    """`modhifi prune --model SOURCE --OPTION VALUE ... --out OUT`: exit 2, one line, no output."""
    flags = [str(part) for key, value in options.items() for part in ("--" + key.replace("_", "-"), value)]
    result = cli("prune", "--model", source, *flags, "--out", out)
    assert result.returncode == 2 and result.stdout == "" and not out.exists()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0].removeprefix("error: ")


def test_a_bad_target_is_one_line(cli, case, source, tmp_path):
    options, message = case.bad_target
    assert _refusal(cli, source, options, tmp_path / "out") == message


def test_a_missing_source_is_one_line(cli, case, tmp_path):
    source, message = case.missing(tmp_path)
    assert _refusal(cli, source, {}, tmp_path / "out") == message


def test_an_option_of_another_kind_is_one_line(cli, case, source, tmp_path):
    flag = "--" + case.foreign.replace("_", "-")
    message = _refusal(cli, source, {case.foreign: 0.5}, tmp_path / "out")
    assert message.startswith(f"{flag} is not an option of modhifi prune for a {case.kind} model (it takes ")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_declarations_are_consistent(name):
    """Options are parameters of their commands; stages read and write workspace artifacts
    and external inputs; every stage either runs or says why not; defaults are complete."""
    kind = kind_class(name)
    for command, options in kind.options.items():
        module = importlib.import_module(f"flows.commands.{command}")
        parameters = set(importlib.import_module("inspect").signature(getattr(module, command)).parameters)
        assert set(options) <= parameters, (command, set(options) - parameters)
        if "seed" in parameters:
            assert "seed" in options, f"{command}: --seed is always given (default 0), so every kind takes it"
    for spec in kind.stages.values():
        assert set(spec.reads) <= set(ARTIFACTS) | set(INPUTS)
        assert set(spec.writes + spec.metrics + spec.plots) <= set(ARTIFACTS)
    assert set(kind.stages) | set(kind.skipped) == set(STAGES) and not set(kind.stages) & set(kind.skipped)
    assert kind.defaults.target in kind.targets
    assert kind.output in ("file", "folder")
