"""IU — influence unlearning with the WoodFisher inverse (Unlearn-Sparse), method.md §5.

Removing D_f from the empirical risk moves the optimum by a Newton step

    θ ← θ + α · H⁻¹ v,      v = n_f / (n_f + n_r) · (ḡ_f − ḡ_r)

with ḡ_f, ḡ_r the mean cross-entropy gradients on D_f and D_r (the reference code's
weighting). H is the WoodFisher approximation of the Hessian, the damped empirical
Fisher of `samples` retain samples, `H = λI + (1/n) Σ g_n g_nᵀ`. The WoodFisher
recursion (Sherman–Morrison, one sample at a time from H₀ = λI) ends at exactly

    H⁻¹ v = (1/λ) [v − Gᵀ (nλ I + G Gᵀ)⁻¹ G v]          (Woodbury, G = rows g_nᵀ)

which is what is computed: one n×n solve instead of the recursion's O(n²) vector passes
(`woodfisher_recursion` keeps the recursion for the equivalence test). λ is unit-free:
`damping` times the mean non-zero eigenvalue `mean_n ‖g_n‖² / n` of the Fisher term.
α is searched (`strength_search`) as a fraction of ‖θ‖ unless given. Pruned weights
do not move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modhifi_core.errors import InputError
from modhifi_core.splits import ForgetSplit
from modhifi_core.unlearning.contract import UnlearnResult, check_float, check_int, run_method
from modhifi_core.unlearning.per_sample_gradients import (
    flat_keep,
    flat_parameters,
    mean_gradient,
    per_sample_gradients,
)
from modhifi_core.unlearning.strength_search import search_strength
from modhifi_core.unstructured.masks import Masks


@dataclass(frozen=True)
class InfluenceParams:
    """`alpha`: None = search over `relative_grid` (step norms as fractions of ‖θ‖);
    `samples`: retain samples in the WoodFisher (the reference uses ~1,000; 256 keep the
    n×P gradient matrix under 1 GB for this model); `damping`: λ relative to the Fisher's
    mean non-zero eigenvalue; `retain_tolerance`/`probe_size` as in FF."""

    alpha: float | None = None
    relative_grid: tuple[float, ...] = tuple(10.0 ** (e / 2) for e in range(-8, 1))
    samples: int = 256
    damping: float = 1e-3
    retain_tolerance: float = 2.0
    probe_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.alpha is not None:
            check_float("alpha", self.alpha, 0.0)
        if not self.relative_grid:
            raise InputError("relative_grid must hold at least one value")
        for value in self.relative_grid:
            check_float("relative_grid value", value, 0.0)
        check_int("samples", self.samples, 1)
        check_float("damping", self.damping, 0.0)
        check_float("retain_tolerance", self.retain_tolerance, 0.0, 100.0, low_open=False)
        check_int("probe_size", self.probe_size, 1)
        check_int("seed", self.seed, 0)


def influence_unlearning(
    model: nn.Module, split: ForgetSplit, masks: Masks | None = None, **hyperparameters
) -> UnlearnResult:
    """IU: a WoodFisher-preconditioned influence step away from the forget set."""
    return run_method("iu", _influence, InfluenceParams, model, split, masks, hyperparameters)


def woodfisher_inverse_product(gradients: Tensor, vector: Tensor, damping: float) -> Tensor:
    """`(λI + (1/n) GᵀG)⁻¹ v` for per-sample gradients `G` `(n, P)`, with
    `λ = damping · mean_n ‖g_n‖² / n`. Float64 for the n×n system."""
    n = gradients.shape[0]
    squared_norms = (gradients.double() ** 2).sum(1)
    lam = damping * float(squared_norms.mean()) / n
    if lam <= 0:
        raise InputError("the retain gradients are all zero: the WoodFisher inverse is undefined")
    gram = gradients.double() @ gradients.double().T
    system = gram + n * lam * torch.eye(n, dtype=torch.float64, device=gram.device)
    coefficients = torch.linalg.solve(system, gradients.double() @ vector.double())
    return ((vector.double() - gradients.double().T @ coefficients) / lam).to(vector.dtype)


def woodfisher_recursion(gradients: Tensor, vector: Tensor, damping: float) -> Tensor:
    """The same product by the WoodFisher recursion: H₀⁻¹ = I/λ and, per sample,
    H⁻¹ ← H⁻¹ − (H⁻¹g)(H⁻¹g)ᵀ / (n + gᵀH⁻¹g). Dense P×P: for tests on small P only."""
    n, size = gradients.shape
    lam = damping * float((gradients.double() ** 2).sum(1).mean()) / n
    inverse = torch.eye(size, dtype=torch.float64) / lam
    for g in gradients.double():
        hg = inverse @ g
        inverse -= torch.outer(hg, hg) / (n + g @ hg)
    return (inverse @ vector.double()).to(vector.dtype)


def _influence(model: nn.Module, split: ForgetSplit, params: InfluenceParams, masks: Masks | None) -> dict:
    n_f, n_r = len(split.forget), len(split.retain)
    v = n_f / (n_f + n_r) * (mean_gradient(model, split.forget) - mean_gradient(model, split.retain))
    order = torch.randperm(n_r, generator=torch.Generator().manual_seed(params.seed))[: params.samples]
    gradients = torch.cat(list(per_sample_gradients(model, split.retain.subset(order.sort().values))))
    direction = woodfisher_inverse_product(gradients, v, params.damping)
    del gradients
    keep = flat_keep(model, masks)
    if keep is not None:
        direction = direction * keep
    scale = float(flat_parameters(model).norm()) / max(float(direction.norm()), torch.finfo(torch.float32).tiny)
    grid = (params.alpha,) if params.alpha is not None else tuple(r * scale for r in params.relative_grid)
    alpha, table = search_strength(
        model, split, lambda a: a * direction, grid, params.retain_tolerance, params.probe_size
    )
    return {"alpha": alpha, "relative_step": alpha / scale, "search": table}
