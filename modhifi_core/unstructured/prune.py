"""Prune-then-unlearn's first step: one entry point for the OMP, IMP and SynFlow pruners."""

from __future__ import annotations

import copy

from torch import nn

from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.training import TrainConfig
from modhifi_core.unstructured.magnitude import imp, omp
from modhifi_core.unstructured.masks import Masks, check_sparsity
from modhifi_core.unstructured.synflow import synflow

PRUNERS = ("omp", "imp", "synflow")


def prune_unstructured(
    model: nn.Module,
    data: ArrayDataset,
    method: str,
    sparsity: float,
    init_state: dict | None = None,
    retrain: TrainConfig | None = TrainConfig(),
) -> tuple[nn.Module, Masks, dict]:
    """Sparsify the trained `model` to `sparsity` with `method` and (re)train it on `data`
    under the mask. Returns a new model, its masks and a log.

    `init_state` is the state dict at initialisation: OMP and IMP rewind to it before
    retraining, SynFlow scores and trains from it (without it, they rewind nowhere and
    SynFlow scores the trained weights). `retrain` is the retraining budget."""
    if method not in PRUNERS:
        raise InputError(f"unknown pruner {method!r}; choose one of {', '.join(PRUNERS)}")
    check_sparsity(sparsity)
    if method == "omp":
        return omp(model, data, sparsity, retrain, rewind_state=init_state)
    if method == "imp":
        return imp(model, data, sparsity, retrain, rewind_state=init_state)
    start = copy.deepcopy(model)
    if init_state is not None:
        start.load_state_dict(init_state)
    return synflow(start, data, sparsity, retrain)
