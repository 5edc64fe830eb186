"""Unstructured (weight-level) sparsity: masks, OMP, IMP and SynFlow (method.md §5)."""

from modhifi_core.unstructured.magnitude import imp, magnitude_masks, omp
from modhifi_core.unstructured.masks import Masks, prunable_weights
from modhifi_core.unstructured.prune import PRUNERS, prune_unstructured
from modhifi_core.unstructured.synflow import synflow, synflow_masks

__all__ = [
    "PRUNERS",
    "Masks",
    "imp",
    "magnitude_masks",
    "omp",
    "prunable_weights",
    "prune_unstructured",
    "synflow",
    "synflow_masks",
]
