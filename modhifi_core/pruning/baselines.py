"""Baselines in ModHiFi-P's call shape: Torch-Pruning's group magnitude (L1, L2) and
random importance, uniform per-group allocation, same FLOPs search, same compensation
options (default none) and the same BN recalibration (`recalibrate=False`: none, the
paper's L2 row)."""

from __future__ import annotations

from torch import Tensor, nn

from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.fidelity import DEFAULT_RIDGE
from modhifi_core.pruning.importance import magnitude_importance, random_importance
from modhifi_core.pruning.modhifi_p import PruningResult, prune_with


def magnitude_prune(
    model: nn.Module,
    calibration: Tensor | ArrayDataset,
    target_flops: float | None = 0.5,
    *,
    p: int = 2,
    keep_fraction: float | None = None,
    compensation: str = "none",
    ridge: float = DEFAULT_RIDGE,
    rounds: int | None = None,
    round_to: int = 1,
    batch_size: int = 128,
    recalibrate: bool = True,
) -> PruningResult:
    """Group Lp-magnitude pruning (`p` = 1 or 2); the calibration data serves BN
    recalibration (and compensation, if asked)."""
    if p not in (1, 2):
        raise InputError(f"magnitude pruning takes p = 1 or 2, got {p}")
    return prune_with(
        model,
        calibration,
        lambda *_: magnitude_importance(p),
        f"l{p}",
        target_flops,
        keep_fraction=keep_fraction,
        compensation=compensation,
        ridge=ridge,
        rounds=rounds,
        round_to=round_to,
        batch_size=batch_size,
        recalibrate=recalibrate,
    )


def random_prune(
    model: nn.Module,
    calibration: Tensor | ArrayDataset,
    target_flops: float | None = 0.5,
    *,
    seed: int = 0,
    keep_fraction: float | None = None,
    compensation: str = "none",
    ridge: float = DEFAULT_RIDGE,
    rounds: int | None = None,
    round_to: int = 1,
    batch_size: int = 128,
    recalibrate: bool = True,
) -> PruningResult:
    """Random channels (seeded), uniform per group."""
    importance = random_importance(seed)
    return prune_with(
        model,
        calibration,
        lambda *_: importance,
        "random",
        target_flops,
        keep_fraction=keep_fraction,
        compensation=compensation,
        ridge=ridge,
        rounds=rounds,
        round_to=round_to,
        batch_size=batch_size,
        recalibrate=recalibrate,
    )
