"""Evaluation summaries of a model on a dataset (test accuracy, per-class accuracy)."""

from __future__ import annotations

from torch import nn

from modhifi_core.data import DatasetSplits
from modhifi_core.training import accuracy, per_class_accuracy


def evaluate_classifier(model: nn.Module, data: DatasetSplits) -> dict:
    """`{"test_accuracy": %, "train_accuracy": %, "per_class_accuracy": [% per class]}`."""
    return {
        "test_accuracy": accuracy(model, data.test),
        "train_accuracy": accuracy(model, data.train),
        "per_class_accuracy": per_class_accuracy(model, data.test),
    }
