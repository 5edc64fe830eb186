"""Compensation of the kept kernels after input channels are dropped (method.md §1).

`scalar` (the paper): each kept slice `W[c, i]` is multiplied by `δ*_ci`, the optimal
coefficient of its component in reconstructing `Y_c`. `full` (beyond the paper): the
kept kernels `W[:, C]` are refit by ridge least squares on the unfolded kept inputs,
`min Σ||Y − W' U_C||² + λ·m·||W' − W_C||²` with `m` the mean diagonal of the Gram, and a
layer with a bias but no BatchNorm after it also gets its bias refit (an affine fit).
Centred statistics are used where the output feeds a BatchNorm, whose recalibration
then absorbs the mean shift.

For a 1x1 kernel (1x1 conv, Linear) a slice is one weight, so `δ*` *is* the
least-squares refit: all outputs then share one factorisation of the kept Gram instead
of one `|C|×|C|` solve per output (ResNet-50's 2048-wide 1x1 layers: ~1 GFLOP instead
of ~500). The ridge is then `λ·mean(diag K_CC)` on the weights rather than
`λ·mean(diag Q_c[C,C])` on δ; with λ = 0 the two are identical.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modhifi_core.fidelity import component_moments, kept_similarity, kernel_slices, optimal_compensation
from modhifi_core.statistics import LayerStatistics

_CHUNK_ELEMENTS = 1 << 24


@torch.no_grad()
def scalar_compensation(
    layer: nn.Module, stats: LayerStatistics, gram: Tensor, kept: Tensor, centered: bool, ridge: float
) -> None:
    """Scale each kept slice `W[c, i], i ∈ kept` of `layer` in place by `δ*_ci`
    (slices that are exactly zero stay zero)."""
    weight = kernel_slices(layer)
    view = layer.weight.view(layer.weight.shape[0], layer.weight.shape[1], -1)
    if weight.shape[-1] == 1:
        refit = _ridge_refit(weight, stats, gram, kept, centered, ridge)[0]
        view[:, kept] = torch.where(weight[:, kept] != 0, refit.unsqueeze(-1), 0.0).to(layer.weight.dtype)
        return
    q1, _, _ = component_moments(stats, weight, centered)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, len(kept) ** 2))
    for start in range(0, weight.shape[0], chunk):
        outputs = torch.arange(start, min(start + chunk, weight.shape[0]))
        similarity = kept_similarity(gram, stats, weight, kept, centered, outputs)
        delta = optimal_compensation(similarity, q1[outputs][:, kept], ridge)
        view[start : start + len(outputs), kept] *= delta.to(layer.weight.dtype).unsqueeze(-1)


@torch.no_grad()
def full_compensation(
    layer: nn.Module, stats: LayerStatistics, gram: Tensor, kept: Tensor, feeds_batchnorm: bool, ridge: float
) -> None:
    """Refit the kept kernels `W[:, kept]` of `layer` in place by ridge least squares."""
    weight = kernel_slices(layer)
    c_out, _, kk = weight.shape
    affine = not feeds_batchnorm and layer.bias is not None
    refit, output_mean, patch = _ridge_refit(weight, stats, gram, kept, feeds_batchnorm or affine, ridge)
    view = layer.weight.view(c_out, layer.weight.shape[1], -1)
    view[:, kept] = refit.reshape(c_out, len(kept), kk).to(layer.weight.dtype)
    if affine:
        layer.bias += (output_mean - refit @ patch).to(layer.bias.dtype)


def _ridge_refit(
    weight: Tensor, stats: LayerStatistics, gram: Tensor, kept: Tensor, centered: bool, ridge: float
) -> tuple[Tensor, Tensor, Tensor]:
    """`W' = W_C + (K + λ·m·I)⁻¹ (M_C − K W_C)` for all outputs at once, with `K` the kept
    Gram and `M_C` the kept block of the cross-moments (both centred if asked). Returns
    the refit kernels `(c_out, |C|·kk)`, the mean output per position `(c_out,)` and the
    kept mean patch `(|C|·kk,)`."""
    c_out = weight.shape[0]
    current = weight[:, kept].reshape(c_out, -1)
    cross = stats.cross[:, kept].reshape(c_out, -1)
    gram = gram.double()
    patch = stats.mean_patch[kept].reshape(-1)
    output_mean = (weight * stats.mean_patch).sum((1, 2))
    if centered:
        gram = gram - stats.positions * torch.outer(patch, patch)
        cross = cross - stats.positions * torch.outer(output_mean, patch)
    scale = torch.diagonal(gram).mean().clamp_min(0.0)
    system = gram + ridge * scale * torch.eye(gram.shape[0], dtype=gram.dtype)
    rhs = cross.T - gram @ current.T
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0 and scale > 0:
        update = torch.cholesky_solve(rhs, factor)
    else:
        update = torch.linalg.lstsq(system, rhs, driver="gelsd").solution
    return current + update.T, output_mean, patch
