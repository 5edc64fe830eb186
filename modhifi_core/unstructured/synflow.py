"""SynFlow (Tanaka et al. 2020): data-free pruning at initialisation, method.md §5.

The score of a weight is `|θ ⊙ ∂R/∂θ|` with `R = 1ᵀ f(1; |θ|)`: the network with every
parameter and buffer replaced by its absolute value, in eval mode and float64, applied to
an all-ones input. Pruning is iterated over `rounds` rounds (100 by default) on an
exponential schedule — round k keeps a `(1 - sparsity)^(k / rounds)` fraction — which
avoids layer collapse. No data is touched; the masked network is then trained under
the mask (`masked_retrain`).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.training import TrainConfig
from modhifi_core.unstructured.magnitude import masked_retrain
from modhifi_core.unstructured.masks import Masks, check_sparsity, prunable_weights


def synflow_masks(model: nn.Module, sparsity: float, input_shape: tuple[int, ...], rounds: int = 100) -> Masks:
    """SynFlow masks of `model` (its current weights, normally the initialisation) for
    inputs of shape `input_shape` = (C, H, W). `model` is not modified."""
    sparsity = check_sparsity(sparsity)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"SynFlow rounds must be an integer >= 1, got {rounds!r}")
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in [*net.parameters(), *net.buffers()]:
            if tensor.is_floating_point():
                tensor.abs_()
    weights = prunable_weights(net)
    original = {name: w.detach().clone() for name, w in weights.items()}
    masks = Masks.dense(net)
    ones = torch.ones(1, *input_shape, dtype=torch.float64, device=next(net.parameters()).device)
    total = sum(w.numel() for w in weights.values())
    for round_index in range(1, rounds + 1):
        with torch.no_grad():
            for name, w in weights.items():
                w.copy_(original[name] * masks.tensors[name])
        net.zero_grad(set_to_none=True)
        net(ones).sum().backward()
        scores = {name: (w.grad * w).detach().abs() for name, w in weights.items()}
        keep = int(round(total * (1.0 - sparsity) ** (round_index / rounds)))
        masks = _keep_top(scores, masks, keep)
    return Masks({name: mask.cpu() for name, mask in masks.tensors.items()})


def _keep_top(scores: dict[str, torch.Tensor], current: Masks, keep: int) -> Masks:
    """Keep the `keep` highest-scoring weights among those `current` keeps."""
    flat = torch.cat([torch.where(current.tensors[n], s, -1.0).flatten() for n, s in scores.items()])
    kept = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    kept[torch.argsort(flat, descending=True, stable=True)[:keep]] = True
    kept &= torch.cat([current.tensors[n].flatten() for n in scores])
    tensors, start = {}, 0
    for name, s in scores.items():
        tensors[name] = kept[start : start + s.numel()].view_as(s)
        start += s.numel()
    return Masks(tensors)


def synflow(
    model: nn.Module,
    data: ArrayDataset,
    sparsity: float,
    retrain: TrainConfig | None = TrainConfig(),
    rounds: int = 100,
) -> tuple[nn.Module, Masks, dict]:
    """Score `model` (at initialisation) with SynFlow, then train it under the masks on
    `data`. Returns a new model, its masks and a log; `model` is not modified."""
    start = time.perf_counter()
    masks = synflow_masks(model, sparsity, data.image_shape, rounds)
    pruned = copy.deepcopy(model)
    train_log = masked_retrain(pruned, masks, data, retrain, rewind_state=None)
    pruned.eval()
    return pruned, masks, {"seconds": time.perf_counter() - start, "rounds": rounds, "train": train_log}
