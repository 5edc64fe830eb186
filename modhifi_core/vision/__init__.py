"""Open-weight vision models: Hugging Face image classifiers for the engine (`hf`: the
adapter, loading and writing folders), rebuild records for pruned networks outside the zoo
(`shapes`); where models come from is the model kinds' business (`kinds/`). Pruning and unlearning them live in `modify`
(conv channels, ModHiFi-U) and `mlp` (ViT/Swin MLP neurons), imported from there: this
package imports neither, so loading a model does not import the pruner."""

from modhifi_core.sources.rebuild import apply_shape_record, module_shapes, shape_record
from modhifi_core.vision.hf import (
    LogitsOnly,
    classifier,
    load_hf_image_classifier,
    load_hf_pruned,
    mlp_output_layers,
    save_hf_pruned,
    stock_shape_difference,
)

__all__ = [
    "LogitsOnly",
    "apply_shape_record",
    "classifier",
    "load_hf_image_classifier",
    "load_hf_pruned",
    "mlp_output_layers",
    "module_shapes",
    "save_hf_pruned",
    "shape_record",
    "stock_shape_difference",
]
