"""Operation `evaluate`: what a model does on real data, and, for an unlearned model, the
unlearning evidence, whether the forgetting survives (audit figures) and where it lives
(`modhifi_core.durability.audit_forgetting`)."""

from __future__ import annotations

from torch import nn

from modhifi_core.compute import place, requested
from modhifi_core.data import DatasetSplits
from modhifi_core.durability import (
    ForgetRelearning,
    RelearningAttack,
    audit_forgetting,
    forgetting_after_recalibration,
    forgetting_after_relearning,
)
from modhifi_core.errors import InputError
from modhifi_core.metrics import unlearning_metrics
from modhifi_core.splits import ForgetSplit
from modhifi_core.training import accuracy, per_class_accuracy, predict


def evaluate(
    model: nn.Module,
    data: DatasetSplits,
    split: ForgetSplit | None = None,
    attack: RelearningAttack | None = None,
    original: nn.Module | None = None,
    relearning: ForgetRelearning | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
) -> dict:
    """`test_accuracy`, `train_accuracy` (%), `per_class_accuracy` (% per class on the
    test set); with a forget `split` also UA, RA, TA, MIA (method.md §5) and the audit of
    whether the forgetting survives: `UA_after_bn_recalibration` (BN statistics
    re-estimated on retained data) and `UA_after_relearning` (`attack`, default 50 SGD
    steps at lr 0.01 on retained data; `RelearningAttack(steps=0)` skips it); for a class
    split also where the forgetting lives (`audit_forgetting`: the few-shot feature probe,
    the forget-data relearning index (`relearning`, default `ForgetRelearning()`), the
    `original` model's figures and its head-reset reference when given, the verdict).
    Refuses a model whose number of outputs is not the dataset's number of classes.
    `device`/`dtype`: where it computes (`modhifi_core.compute`; None: where the model is)."""
    place(model, requested(device, dtype))
    check_classes(model, data)
    metrics = {
        "test_accuracy": accuracy(model, data.test),
        "train_accuracy": accuracy(model, data.train),
        "per_class_accuracy": per_class_accuracy(model, data.test),
    }
    if split is not None:
        metrics.update(unlearning_metrics(model, split, data.test))
        metrics["UA_after_bn_recalibration"] = forgetting_after_recalibration(model, split)
        attack = attack or RelearningAttack()
        if attack.steps > 0:
            metrics["UA_after_relearning"] = forgetting_after_relearning(model, split, attack)
        if split.forget_class is not None:
            relearning = relearning or ForgetRelearning()
            metrics.update(audit_forgetting(model, data, split.forget_class, original, relearning=relearning))
    return metrics


def check_classes(model: nn.Module, data: DatasetSplits) -> None:
    """`InputError` unless `model` predicts as many classes as `data` has."""
    outputs = predict(model, data.test.images[:1]).shape[-1]
    if outputs != data.num_classes:
        raise InputError(f"the model has {outputs} classes, the dataset {data.num_classes}")
