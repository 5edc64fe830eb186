"""Pruning and unlearning Hugging Face image classifiers through the engine (the
`LogitsOnly` adapter of `modhifi_core.vision.hf` makes them `model(images) -> logits`):

    pruned = prune_hf_classifier(hf_model, images, "modhifi", target_flops=0.5)   # CNNs
    result = unlearn_hf_classifier(hf_vit, split, fraction=0.05)                   # ViT / Swin

Kept apart from `vision.hf` so that loading a model does not import the pruner (a DVC
stage that only loads one does not re-run when the pruning code changes); the pruning
itself lives in `vision.channels` (re-exported here), so that pruning does not import
the unlearning methods."""

from __future__ import annotations

from torch import nn

from modhifi_core.splits import ForgetSplit
from modhifi_core.unlearning import UnlearnResult, unlearn
from modhifi_core.vision.channels import prune_hf_classifier
from modhifi_core.vision.hf import LAYERNORM_TRANSFORMERS, LogitsOnly, mlp_output_layers, model_type

__all__ = ["prune_hf_classifier", "unlearn_hf_classifier"]


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
