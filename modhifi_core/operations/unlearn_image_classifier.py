"""Operation `unlearn_image_classifier`: forget one class of an open-weight image
classifier (a Hugging Face model or a torchvision/timm network) — what `modhifi unlearn
--model hf:DIR | torchvision:ARCH --forget-class K` runs.

ModHiFi-U (method.md §3) by default: the forget class's high-fidelity components are
zeroed in a BatchNorm network's last stage, negated in the residual-stream MLPs of a
LayerNorm transformer (ViT/DeiT/Swin; `vision.modify.unlearn_hf_classifier`). Data-free by
default: the method sees samples synthesised from the model (`operations.unlearn
.synthetic_inputs`, the checkpoint path's rule), the evidence is measured on real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from modhifi_core.compute import place, requested
from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.durability import audit_forgetting
from modhifi_core.errors import InputError
from modhifi_core.metrics import unlearning_metrics
from modhifi_core.operations.evaluate import check_classes
from modhifi_core.operations.unlearn import synthetic_inputs
from modhifi_core.splits import class_split
from modhifi_core.unlearning import unlearn
from modhifi_core.unlearning.logit_mask import FORGETTING as LOGIT_MASK
from modhifi_core.vision.hf import classifier
from modhifi_core.vision.modify import unlearn_hf_classifier


@dataclass
class ImageUnlearning:
    """The edited model (a new module of the input's type), the metrics and the method's log."""

    model: nn.Module
    metrics: dict[str, Any]
    log: dict[str, Any] = field(default_factory=dict)


def unlearn_image_classifier(
    model: nn.Module,
    data: DatasetSplits,
    forget_class: int,
    *,
    method: str = "modhifi",
    forget_data: str = "synthetic",
    hyperparameters: dict[str, Any] | None = None,
    seed: int = 0,
    samples: ArrayDataset | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> ImageUnlearning:
    """Forget class `forget_class` of `data` from `model` (untouched) with `method` (a name
    of `modhifi_core.unlearning.METHODS` except `retrain`, which needs a training recipe this model
    does not carry). `forget_data`: `synthetic` (the method sees samples made from the
    model: data-free; `samples` when given, e.g. a pipeline's synthesize stage's, else made
    now) or `real` (the training split of `data`). Refuses a model whose
    number of classes is not the dataset's and a class it does not have.

    Metrics: `method`, `forget`, `data`, UA, RA, TA, MIA (%) after and `before_*` on the
    input model (real data: D_f/D_r of `data.train`, TA/MIA on `data.test` without the
    class), `seconds` (the unlearning step), where the forgetting lives
    (`durability.audit_forgetting` against the input model) and, when the edit is a logit
    mask, `forgetting_is_logit_mask`."""
    place(model, requested(device, dtype))
    if method == "retrain":
        raise InputError("retrain needs the model's training recipe; an open-weight model carries none")
    from modhifi_core.unlearning.api import METHODS

    if method not in METHODS:
        raise InputError(f"unknown unlearning method {method!r}; choose one of {', '.join(METHODS)}")
    if forget_data not in ("synthetic", "real"):
        raise InputError(f"forget data must be synthetic or real, got {forget_data!r}")
    network = classifier(model)
    check_classes(network, data)
    split = class_split(data.train, forget_class)
    method_split, options = split, dict(hyperparameters or {})
    if forget_data == "synthetic":
        method_split, options = synthetic_inputs(
            network, samples, data, forget_class=forget_class, method=method, hyperparameters=options, seed=seed
        )
    if hasattr(model, "config"):
        result = unlearn_hf_classifier(model, method_split, method, **options)
    else:
        result = unlearn(network, method_split, method, **options)
    edited = result.model.eval()
    before = unlearning_metrics(network, split, data.test)
    after = unlearning_metrics(classifier(edited), split, data.test)
    metrics = {
        "method": method,
        "forget": split.describe(),
        "data": forget_data,
        **after,
        **{f"before_{k}": v for k, v in before.items()},
        **audit_forgetting(classifier(edited), data, forget_class, network),
        "seconds": result.seconds,
    }
    if result.log.get("forgetting") == LOGIT_MASK:
        metrics["forgetting_is_logit_mask"] = True
    return ImageUnlearning(edited, metrics, result.log)
