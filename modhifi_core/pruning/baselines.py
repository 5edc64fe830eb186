"""Baselines in ModHiFi-P's call shape: Torch-Pruning's group magnitude (L1, L2) and
random importance, uniform per-group allocation, same FLOPs search, same compensation
options (default none) and the same BN recalibration. Keyword options are those of
`prune_with` (`keep_fraction`, `compensation`, `ridge`, `rounds`, `round_to`,
`batch_size`, `example_inputs`, `ignored_layers`; `recalibrate=False`: no BN
recalibration, the paper's L2 row)."""

from __future__ import annotations

from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.pruning.importance import magnitude_importance, random_importance
from modhifi_core.pruning.modhifi_p import TARGET_FLOPS, PruningResult, prune_with


def magnitude_prune(
    model: nn.Module, calibration: object, target_flops: float | None = TARGET_FLOPS, *, p: int = 2, **options
) -> PruningResult:
    """Group Lp-magnitude pruning (`p` = 1 or 2); the calibration data serves BN
    recalibration (and compensation, if asked)."""
    if p not in (1, 2):
        raise InputError(f"magnitude pruning takes p = 1 or 2, got {p}")
    return prune_with(model, calibration, lambda *_: magnitude_importance(p), f"l{p}", target_flops, **options)


def random_prune(
    model: nn.Module, calibration: object, target_flops: float | None = TARGET_FLOPS, *, seed: int = 0, **options
) -> PruningResult:
    """Random channels (seeded), uniform per group."""
    importance = random_importance(seed)
    return prune_with(model, calibration, lambda *_: importance, "random", target_flops, **options)
