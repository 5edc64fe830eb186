"""Hugging Face image classifiers for the engine: the `LogitsOnly` adapter, loading and
writing (pruned) folders. Pruning and unlearning them: `modhifi_core.vision.modify`
(channel pruning in `vision.channels`).

The engine's layers (Torch-Pruning's tracer, statistics hooks, BN recalibration,
`predict`) call `model(images)` and expect logits; an HF classifier takes
`pixel_values=` and returns an `ImageClassifierOutput`. `LogitsOnly` adapts one to the
other, so the HF network itself (as `.model`) is what gets traced, scored and edited:

    pruned = prune_hf_classifier(hf_model, images, "modhifi", target_flops=0.5)   # CNNs
    result = unlearn_hf_classifier(hf_vit, split, fraction=0.05)                   # ViT / Swin

Pruning here (CNNs) removes conv channels (ResNet) and the MLP neurons inside ConvNeXt
blocks (`pwconv1 -> pwconv2`) through `modhifi_core.pruning.prune_model`. Groups that
cannot be pruned exactly — the channels ConvNeXt's depthwise convs read, its LayerNorm
stem — are left untouched and named in `report["untouched_groups"]`; nothing raises for
them. ViT/Swin are refused there: Torch-Pruning would cut q/k/v channels across heads,
and attention is a pass-through (method.md §3b); their MLP neurons belong to the FFN
pruner (`modhifi_core.pruning.ffn`).

A channel-pruned HF ResNet keeps one width per stage (`vision.stock_widths`) and its
new `hidden_sizes`/`embedding_size` in the config, so it is written as a stock folder,
as is any model whose config describes it (unpruned, MLP-pruned by
`modhifi_core.vision.mlp`). A CNN pruned with per-layer widths has no `config.json`
stock `transformers` could rebuild it from (`widths="free"`, or ConvNeXt, whose config
fixes the MLP at 4x a residual width that cannot be pruned exactly through its
LayerNorms), so `save_hf_pruned` writes the folder plus `modhifi_shapes.json` (the shape
record of `modhifi_core.sources.rebuild`), and `load_hf_pruned` rebuilds from both.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from modhifi_core.checkpoint import refuse_non_finite
from modhifi_core.errors import InputError
from modhifi_core.sources.huggingface import check_folder
from modhifi_core.sources.rebuild import apply_shape_record, shape_record

SHAPES_FILE = "modhifi_shapes.json"
MAX_SHAPES_BYTES = 16 * 2**20  # a record of a few kB per pruned layer
# LayerNorm transformers whose residual-stream MLPs ModHiFi-U edits. Their fc2 (the down
# projection whose inputs are the MLP neurons) is `*.mlp.fc2` in transformers 5.x and
# `*.layer.N.output.dense` (beside `attention.output.dense`) in 4.x.
LAYERNORM_TRANSFORMERS = ("vit", "deit", "swin", "swinv2")
_MLP_OUTPUT_PATTERNS = ("*.mlp.fc2", "*.output.dense")


class LogitsOnly(nn.Module):
    """`model(pixel_values=x).logits` as `forward(x)`; the HF model is `self.model`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values).logits


def classifier(model: nn.Module) -> nn.Module:
    """`model(images) -> logits`, in eval mode: an HF model (it has a `.config`) behind
    `LogitsOnly`, any other network as it is."""
    return (LogitsOnly(model) if hasattr(model, "config") else model).eval()


def load_hf_image_classifier(folder: str | Path) -> nn.Module:
    """An HF image classifier from a local folder, in eval mode, through
    `modhifi_core.sources.load_hf` (its checks: no remote code, no hub access, no pickled
    payload, honest safetensors headers, finite weights)."""
    from modhifi_core.sources import load_hf

    return load_hf(folder, kind="image-classification").model


def model_type(model: nn.Module) -> str:
    """The HF `config.model_type` of `model` (or of a `LogitsOnly`'s inner model)."""
    inner = model.model if isinstance(model, LogitsOnly) else model
    config = getattr(inner, "config", None)
    if config is None:
        raise InputError(f"{type(inner).__name__} is not a Hugging Face model (no .config)")
    return config.model_type


def mlp_output_layers(model: nn.Module) -> tuple[str, ...]:
    """Names (inside `LogitsOnly`, prefix "model.") of the residual-stream MLP down
    projections (fc2) of an HF ViT/DeiT/Swin, in module order."""
    kind = model_type(model)
    if kind not in LAYERNORM_TRANSFORMERS:
        raise InputError(f"no residual-stream MLP layer set known for model type {kind!r}")
    inner = model.model if isinstance(model, LogitsOnly) else model
    names = tuple(
        f"model.{name}"
        for name, module in inner.named_modules()
        if isinstance(module, nn.Linear)
        and any(fnmatch.fnmatchcase(name, pattern) for pattern in _MLP_OUTPUT_PATTERNS)
        and ".attention." not in name
    )
    if not names:
        raise InputError(f"found no MLP fc2 layers in the {kind} model")
    return names


def save_hf_pruned(
    model: nn.Module, folder: str | Path, *, source: str | Path | None = None, lineage: dict | None = None
) -> Path:
    """Write `model` as a Hugging Face folder through `modhifi_core.sources.save_hf`
    (`config.json`, `model.safetensors`, `modhifi.json` = `lineage` + code version + weight
    hash; the preprocessor files of `source` copied), plus `modhifi_shapes.json` when the
    config cannot describe the pruned shapes (a CNN pruned with per-layer widths): the
    layers that differ from a dense build of `model.config`. Without that file the folder
    is stock (a pruned HF ResNet with stock widths: `vision.stock_widths`)."""
    from modhifi_core.sources import save_hf

    record = stock_shape_difference(model)
    extra = {SHAPES_FILE: {"layer_shapes": record}} if record else None
    return save_hf(model, folder, source=source, lineage=lineage, extra_json=extra)


def stock_shape_difference(model: nn.Module) -> dict[str, dict]:
    """The layers of an HF model whose shapes a fresh build of its own config does not
    reproduce (`shape_record`; built on the meta device, no memory for weights). Empty:
    stock `from_pretrained` rebuilds the model."""
    with torch.device("meta"):
        dense = type(model)(model.config)
    return shape_record(model, dense)


def read_shape_record(folder: Path) -> dict | None:
    """The `layer_shapes` of `folder`'s `modhifi_shapes.json` (None: the folder has none);
    an `InputError` naming the file if it is not a readable JSON record of sane size."""
    shapes_path = folder / SHAPES_FILE
    if not shapes_path.exists():
        return None
    if not shapes_path.is_file() or shapes_path.stat().st_size > MAX_SHAPES_BYTES:
        raise InputError(f"{shapes_path} is not a shape record (a JSON file of at most {MAX_SHAPES_BYTES >> 20} MiB)")
    try:
        return json.loads(shapes_path.read_text(encoding="utf-8"))["layer_shapes"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{shapes_path} is not a shape record ({type(exc).__name__})") from None


def check_shape_record(folder: str | Path) -> None:
    """What `load_hf_pruned` refuses of `folder`'s shape record, found without loading it:
    the record read, and applied to the architecture `config.json` builds on the meta
    device (nothing allocated), so a module it names or a shape it gives is checked."""
    import torch
    from transformers import AutoConfig, AutoModelForImageClassification

    folder = Path(folder)
    record = read_shape_record(folder)
    if record is None:
        return
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        apply_shape_record(AutoModelForImageClassification.from_config(config), record)


def load_hf_pruned(folder: str | Path) -> nn.Module:
    """The image classifier in `folder`, in eval mode: a stock folder through
    `load_hf`, one with `modhifi_shapes.json` (`save_hf_pruned`) as config -> dense build
    -> resized -> weights, with the same refusals."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForImageClassification

    folder = Path(folder)
    record = read_shape_record(folder)
    if record is None:
        return load_hf_image_classifier(folder)
    check_folder(folder)  # the same refusals as load_hf before anything is parsed by transformers
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    model = apply_shape_record(AutoModelForImageClassification.from_config(config), record)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise InputError(f"{folder} has no model.safetensors")
    state = load_file(str(weights))
    refuse_non_finite(state, weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"{weights} does not fit the recorded shapes: {' '.join(first[:3])}") from None
    return model.eval()
