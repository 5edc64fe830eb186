"""modhifi's engine: pure PyTorch model modification without training data.

The public API is the operations (`modhifi_core.operations`):

    from modhifi_core import prune
    result = prune(model, calibration_images, target_flops=0.5)   # any traceable nn.Module
    result.model, result.report["flops_ratio"]

Statistics, subset fidelity, pruning, unlearning, synthesis, fine-tuning, metrics,
models, data and safe I/O live in the submodules. Never imports prefect, mlflow or dvc.
"""

__version__ = "0.1.0"

# The public API: each operation and the module it lives in, imported on first use so
# that `import modhifi_core` stays cheap and a stage imports only what it runs.
_OPERATIONS = {
    "collect_statistics": "modhifi_core.operations.statistics",
    "score": "modhifi_core.operations.statistics",
    "evaluate": "modhifi_core.operations.evaluate",
    "evaluate_language_model": "modhifi_core.operations.evaluate_language_model",
    "finetune": "modhifi_core.distillation",
    "prune": "modhifi_core.operations.prune",
    "prune_image_classifier": "modhifi_core.operations.prune_image_classifier",
    "prune_language_model": "modhifi_core.operations.prune_language_model",
    "prune_language_model_layerwise": "modhifi_core.operations.prune_language_model",
    "synthesize": "modhifi_core.synthesis",
    "train": "modhifi_core.operations.train",
    "unlearn": "modhifi_core.unlearning",
    "unlearn_image_classifier": "modhifi_core.operations.unlearn_image_classifier",
}
__all__ = ["__version__", *_OPERATIONS]


def __getattr__(name: str) -> object:
    if name in _OPERATIONS:
        import importlib

        return getattr(importlib.import_module(_OPERATIONS[name]), name)
    raise AttributeError(f"module 'modhifi_core' has no attribute {name!r}")
