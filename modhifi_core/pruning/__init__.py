"""Structured pruning: ModHiFi-P and its baselines in one call shape.

    prune_model(model, calibration, "modhifi", target_flops=0.5) -> PruningResult(model, report)

Methods: `modhifi` (saliency or Subset Fidelity score, union rule, compensation), `l1` / `l2` (Torch-Pruning
group magnitude; `magnitude` is L2) and `random`. All remove channels physically via
Torch-Pruning's DependencyGraph and recalibrate BatchNorm on the calibration data.
"""

from __future__ import annotations

from torch import Tensor, nn

from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.pruning.baselines import magnitude_prune, random_prune
from modhifi_core.pruning.compensation import ORDERS
from modhifi_core.pruning.modhifi_p import ALLOCATIONS, COMPENSATIONS, SCORES, PruningResult, modhifi_prune, prune_with

METHODS = ("modhifi", "magnitude", "l1", "l2", "random")

__all__ = [
    "ALLOCATIONS",
    "COMPENSATIONS",
    "METHODS",
    "ORDERS",
    "SCORES",
    "PruningResult",
    "magnitude_prune",
    "modhifi_prune",
    "prune_model",
    "prune_with",
    "random_prune",
]


def prune_model(
    model: nn.Module, calibration: Tensor | ArrayDataset, method: str = "modhifi", **options
) -> PruningResult:
    """Dispatch to `modhifi_prune`, `magnitude_prune` (`l1`, `l2`, `magnitude` = L2) or
    `random_prune` with the same keyword options (`target_flops`, `keep_fraction`,
    `compensation`, `ridge`, `rounds`, `round_to`, `batch_size`; `seed` for random; `score`
    and `compensation_order` for modhifi; `recalibrate` for the baselines)."""
    if method == "modhifi":
        return modhifi_prune(model, calibration, **options)
    if method in ("magnitude", "l1", "l2"):
        return magnitude_prune(model, calibration, p=1 if method == "l1" else 2, **options)
    if method == "random":
        return random_prune(model, calibration, **options)
    raise InputError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
