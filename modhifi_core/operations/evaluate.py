"""Operation `evaluate`: what a model does on real data, and, for an unlearned model, the
unlearning evidence and whether the forgetting survives (audit figures)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.data import DatasetSplits
from modhifi_core.errors import InputError
from modhifi_core.metrics import unlearning_metrics
from modhifi_core.splits import ForgetSplit
from modhifi_core.training import accuracy, per_class_accuracy, predict


def evaluate(model: nn.Module, data: DatasetSplits, split: ForgetSplit | None = None) -> dict:
    """`test_accuracy`, `train_accuracy` (%), `per_class_accuracy` (% per class on the
    test set); with a forget `split` also UA, RA, TA, MIA (method.md §5) and
    `UA_after_bn_recalibration`. Refuses a model whose number of outputs is not the
    dataset's number of classes."""
    check_classes(model, data)
    metrics = {
        "test_accuracy": accuracy(model, data.test),
        "train_accuracy": accuracy(model, data.train),
        "per_class_accuracy": per_class_accuracy(model, data.test),
    }
    if split is not None:
        metrics.update(unlearning_metrics(model, split, data.test))
        metrics["UA_after_bn_recalibration"] = forgetting_after_recalibration(model, split)
    return metrics


def check_classes(model: nn.Module, data: DatasetSplits) -> None:
    """`InputError` unless `model` predicts as many classes as `data` has."""
    outputs = predict(model, data.test.images[:1]).shape[-1]
    if outputs != data.num_classes:
        raise InputError(f"the model has {outputs} classes, the dataset {data.num_classes}")


def forgetting_after_recalibration(model: nn.Module, split: ForgetSplit) -> float:
    """UA after re-estimating the BN statistics on the retained training data: an audit of
    whether the forgetting lives in the weights or only in stale BN statistics (for
    ModHiFi-U's zeroing it is the latter: digits, UA 100 -> 0 after recalibration)."""
    probe = copy.deepcopy(model)
    with torch.no_grad():
        recalibrate_batchnorm(probe, split.retain.images.split(256))
    return 100.0 - accuracy(probe, split.forget)
