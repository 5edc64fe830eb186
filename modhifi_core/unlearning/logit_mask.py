"""The logit mask: forgetting a class by editing only its row of the classifier — a baseline
and a control, NOT forgetting.

The inputs `i` of the classifier whose mean contribution `w_ki · E x_i` raises the forget
class's logit `k` on the forget samples (the top `head_fraction` of them, positive ones
only) get their weights `W[k, i]` negated: the logit falls on exactly the features that
raised it. No BatchNorm follows the classifier, so BN recalibration cannot undo it, and
fine-tuning on retained data only pushes that logit further down: it passes the
retained-data audit (UA 100 after BN recalibration and the relearning attack on every
digits pair, benchmarks/README.md). The features are untouched — they still encode the
class, and a linear probe or a few labelled samples bring it back
(`modhifi_core.durability.audit_forgetting` says "head"). Offered as method `logit-mask`
(this edit alone) and as ModHiFi-U's `logit_mask=True` (after its stage edit); either
records in the result's log, and so in the unlearned model's lineage, that the forgetting
is a logit mask.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import Executor
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modhifi_core.errors import InputError
from modhifi_core.fidelity import kernel_slices
from modhifi_core.models import classifier_name
from modhifi_core.splits import ForgetSplit
from modhifi_core.statistics import collect_statistics
from modhifi_core.training import predict
from modhifi_core.unlearning.contract import UnlearnResult, check_float, check_int, run_method
from modhifi_core.unstructured.masks import Masks

# What the result's log says about a model whose forgetting is this edit.
FORGETTING = "logit mask: the classifier row of the forget class is edited, the features still encode the class"


@dataclass(frozen=True)
class LogitMaskParams:
    """`head_fraction`: the share of the classifier's inputs whose weights may be negated
    (positive contributions only); `forget_images`: the samples the contributions are
    measured on (default D_f; synthetic samples of the class for a data-free run);
    `samples`: at most this many of them (0 = all)."""

    head_fraction: float = 1.0
    forget_images: Tensor | None = None
    samples: int = 0

    def __post_init__(self) -> None:
        check_float("head_fraction", self.head_fraction, 0.0, 1.0)
        if self.forget_images is not None and (
            not isinstance(self.forget_images, Tensor) or self.forget_images.ndim != 4 or len(self.forget_images) == 0
        ):
            raise InputError("forget_images must be a non-empty image tensor (N, C, H, W)")
        check_int("samples", self.samples, 0)


def logit_mask(
    model: nn.Module,
    split: ForgetSplit,
    masks: Masks | None = None,
    *,
    executor: Executor | None = None,
    **hyperparameters,
) -> UnlearnResult:
    """Method `logit-mask`: negate the forget class's classifier weights on the features
    that raise its logit (module docstring); nothing else changes."""
    body = functools.partial(_logit_mask, executor=executor)
    return run_method("logit-mask", body, LogitMaskParams, model, split, masks, hyperparameters)


def _logit_mask(
    model: nn.Module, split: ForgetSplit, params: LogitMaskParams, masks: Masks | None, executor: Executor | None
) -> dict:
    if split.forget_class is None and params.forget_images is None:
        raise InputError("the logit mask edits one class's row: use a class-wise split (or pass forget_images)")
    forget = params.forget_images if params.forget_images is not None else split.forget.images
    forget = forget[: params.samples or len(forget)]
    target = forget_class_of(model, split, forget)
    negated = negate_head(model, *head_components(model, forget, target, params.head_fraction, executor=executor))
    return {"head_negated": negated, "forgetting": FORGETTING}


def forget_class_of(model: nn.Module, split: ForgetSplit, forget: Tensor) -> int:
    """The class being forgotten: the split's, else the model's majority vote on `forget`."""
    if split.forget_class is not None:
        return int(split.forget_class)
    return int(torch.mode(predict(model, forget).argmax(1)).values)


def head_components(
    model: nn.Module, forget: Tensor, forget_class: int, fraction: float, *, executor: Executor | None = None
) -> tuple[int, Tensor]:
    """The classifier's inputs `i` whose mean contribution `E Σ_p A_ki = w_ki · E Σ_p x_i` on
    `forget` raises logit `k = forget_class`, the top `fraction` of the inputs (at least one;
    positive ones only). Returns `(k, indices)`. `executor`: the statistics pass runs as
    shards on it."""
    name = classifier_name(model)
    layer = model.get_submodule(name)
    stats = collect_statistics(model, forget.split(256), layers=[name], executor=executor)[name]
    contribution = (kernel_slices(layer)[forget_class] * stats.input_sum[:, :]).sum(-1) / stats.samples
    k = max(1, math.ceil(fraction * len(contribution)))
    top = torch.topk(contribution, k).indices
    return forget_class, top[contribution[top] > 0]


def negate_head(model: nn.Module, forget_class: int, inputs: Tensor) -> int:
    """Negate the classifier weights `W[forget_class, inputs]` in place. Returns the number
    of weights negated."""
    layer = model.get_submodule(classifier_name(model))
    with torch.no_grad():
        view = layer.weight.view(layer.weight.shape[0], layer.weight.shape[1], -1)
        view[forget_class, inputs.to(layer.weight.device)] *= -1.0
    return int(len(inputs))
