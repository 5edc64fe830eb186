"""Pruning and unlearning Hugging Face image classifiers through the engine (the
`LogitsOnly` adapter of `modhifi_core.vision.hf` makes them `model(images) -> logits`):

    pruned = prune_hf_classifier(hf_model, images, "modhifi", target_flops=0.5)   # CNNs
    result = unlearn_hf_classifier(hf_vit, split, fraction=0.05)                   # ViT / Swin

Kept apart from `vision.hf` so that loading a model does not import the pruner (a DVC
stage that only loads one does not re-run when the pruning code changes)."""

from __future__ import annotations

from torch import Tensor, nn

from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.pruning import PruningResult, prune_model
from modhifi_core.splits import ForgetSplit
from modhifi_core.unlearning import UnlearnResult, unlearn
from modhifi_core.vision.hf import LAYERNORM_TRANSFORMERS, LogitsOnly, mlp_output_layers, model_type
from modhifi_core.vision.shapes import shape_record


def prune_hf_classifier(
    model: nn.Module, calibration: Tensor | ArrayDataset, method: str = "modhifi", **options
) -> PruningResult:
    """`prune_model` on an HF image classifier: calibration images `(N, C, H, W)` as the
    model's `pixel_values`; options as for `prune_model`. Returns the pruned HF model
    (a new module, the input is untouched) and the report, with `shape_record` added."""
    kind = model_type(model)
    if kind in LAYERNORM_TRANSFORMERS:
        # Torch-Pruning would also cut q/k/v output channels across heads; attention is a
        # pass-through here (method.md §3b): MLP neurons are pruned by the FFN pruner.
        raise InputError(
            f"{kind} models are pruned by MLP neurons only (modhifi_core.vision.mlp.prune_hf_mlp), "
            "not through prune_model"
        )
    result = prune_model(LogitsOnly(model).eval(), calibration, method, **options)
    pruned = result.model.model.eval()
    report = dict(result.report)
    report["shape_record"] = shape_record(pruned, model)
    return PruningResult(pruned, report)


def unlearn_hf_classifier(
    model: nn.Module, split: ForgetSplit, method: str = "modhifi", **hyperparameters
) -> UnlearnResult:
    """`unlearn` on an HF image classifier; the result's model is an edited copy (the HF
    model itself, unwrapped), layer names in its log carry the adapter's "model." prefix.
    ModHiFi-U defaults for LayerNorm transformers: `layers` = every residual-stream MLP
    fc2 (`mlp_output_layers`), edit `negate` (chosen by the engine for LayerNorm networks)."""
    wrapper = LogitsOnly(model).eval()
    if method == "modhifi" and "layers" not in hyperparameters and model_type(model) in LAYERNORM_TRANSFORMERS:
        hyperparameters["layers"] = mlp_output_layers(model)
    result = unlearn(wrapper, split, method, **hyperparameters)
    return UnlearnResult(result.model.model.eval(), result.seconds, result.log)
