"""Open-weight vision models: Hugging Face image classifiers through the engine's pruning
and unlearning, and rebuild records (shape records) for pruned networks outside the zoo."""

from modhifi_core.vision.hf import (
    LogitsOnly,
    load_hf_image_classifier,
    load_hf_pruned,
    mlp_output_layers,
    prune_hf_classifier,
    save_hf_pruned,
    stock_shape_difference,
    unlearn_hf_classifier,
)
from modhifi_core.vision.mlp import prune_hf_mlp
from modhifi_core.vision.shapes import apply_shape_record, module_shapes, shape_record

__all__ = [
    "LogitsOnly",
    "apply_shape_record",
    "load_hf_image_classifier",
    "load_hf_pruned",
    "mlp_output_layers",
    "module_shapes",
    "prune_hf_classifier",
    "prune_hf_mlp",
    "save_hf_pruned",
    "shape_record",
    "stock_shape_difference",
    "unlearn_hf_classifier",
]
