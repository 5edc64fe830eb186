"""Magnitude pruning with rewinding: OMP (one shot) and IMP (iterative), method.md §5.

OMP prunes the smallest-magnitude prunable weights globally to the target sparsity in
one shot, rewinds the survivors to `rewind_state` (the weights at initialisation or at
an early epoch) and retrains under the mask. IMP repeats prune-20%-of-the-remaining →
rewind → retrain until the target is reached (the last round prunes just what is left
to prune). `retrain=None` skips retraining (and therefore rewinding): the masked
trained weights are returned as they are.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from modhifi_core.checks import check_fraction
from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.training import TrainConfig, train_model
from modhifi_core.unstructured.masks import Masks, check_sparsity, prunable_weights


@torch.no_grad()
def magnitude_masks(model: nn.Module, sparsity: float, current: Masks | None = None) -> Masks:
    """Global magnitude masks pruning a `sparsity` fraction of all prunable weights.

    Weights already pruned in `current` stay pruned (they rank below every survivor)."""
    sparsity = check_sparsity(sparsity)
    weights = prunable_weights(model)
    current = current or Masks.dense(model)
    scores = {name: torch.where(current.tensors[name], w.detach().abs(), -1.0) for name, w in weights.items()}
    flat = torch.cat([s.flatten() for s in scores.values()])
    n_prune = int(round(sparsity * flat.numel()))
    if n_prune == 0:
        return Masks({name: m.clone() for name, m in current.tensors.items()})
    # Ranking (not a threshold) prunes exactly n_prune weights even when magnitudes tie.
    pruned = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    pruned[torch.argsort(flat, stable=True)[:n_prune]] = True
    tensors, start = {}, 0
    for name, s in scores.items():
        tensors[name] = ~pruned[start : start + s.numel()].view_as(s)
        start += s.numel()
    return Masks(tensors)


def masked_retrain(
    model: nn.Module, masks: Masks, data: ArrayDataset, retrain: TrainConfig | None, rewind_state: dict | None
) -> dict:
    """Rewind `model` to `rewind_state` (if given) and train it under `masks`; in place."""
    if retrain is None:
        if rewind_state is not None:
            raise InputError("rewinding needs retraining: give a retraining budget (epochs >= 1)")
        masks.apply(model)
        return {}
    if rewind_state is not None:
        model.load_state_dict(rewind_state)
    with masks.enforced(model):
        return train_model(model, data, retrain)


def omp(
    model: nn.Module,
    data: ArrayDataset,
    sparsity: float,
    retrain: TrainConfig | None = TrainConfig(),
    rewind_state: dict | None = None,
) -> tuple[nn.Module, Masks, dict]:
    """One-shot global magnitude pruning of the trained `model`, rewinding, retraining.

    Returns a new model, its masks and a log; `model` is not modified."""
    start = time.perf_counter()
    masks = magnitude_masks(model, sparsity)
    pruned = copy.deepcopy(model)
    train_log = masked_retrain(pruned, masks, data, retrain, rewind_state)
    pruned.eval()
    return pruned, masks, {"seconds": time.perf_counter() - start, "rounds": 1, "train": train_log}


def imp(
    model: nn.Module,
    data: ArrayDataset,
    sparsity: float,
    retrain: TrainConfig | None = TrainConfig(),
    rewind_state: dict | None = None,
    rate: float = 0.2,
) -> tuple[nn.Module, Masks, dict]:
    """Iterative magnitude pruning: each round prunes `rate` of the remaining weights,
    rewinds and retrains, until `sparsity` is reached. `model` is not modified."""
    sparsity = check_sparsity(sparsity)
    check_fraction("IMP rate", rate)
    start = time.perf_counter()
    rounds = math.ceil(math.log(1.0 - sparsity) / math.log(1.0 - rate) - 1e-9) if sparsity > 0 else 0
    pruned = copy.deepcopy(model)
    masks = Masks.dense(pruned)
    logs = []
    for round_index in range(1, rounds + 1):
        target = min(sparsity, 1.0 - (1.0 - rate) ** round_index)
        masks = magnitude_masks(pruned, target, current=masks)
        logs.append(masked_retrain(pruned, masks, data, retrain, rewind_state))
    pruned.eval()
    return pruned, masks, {"seconds": time.perf_counter() - start, "rounds": rounds, "train": logs}
