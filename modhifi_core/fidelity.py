"""Subset Fidelity of a layer's components (method.md §1).

For output channel `c` the components are `A_ci = W_ci ⋆ Φ_i`, one per input channel,
and `Q_c[i, j] = E <A_ci, A_cj>` (E over samples, <.,.> summed over output positions).
Everything here is computed from `LayerStatistics` sums, never from materialised `A`:

    (Q_c 1)_i = w_ciᵀ M[i-block, c]      Q_c[i, i] = w_ciᵀ K_ii w_ci      1ᵀ Q_c 1 = E Σ_p Y_c,p²

`centered=True` is the BatchNorm variant: `Q̃_c[i, j] = Q_c[i, j] − P μ_ci μ_cj` with
`μ_ci = w_ciᵀ ū_i`. Fidelities and singleton scores are dimensionless, in [0, 1];
compensation coefficients `δ` are dimensionless multipliers of the kept kernel slices.

The selection score (method.md §1, what ModHiFi-P and ModHiFi-U rank by) is the signed
saliency `R̃_ci = E <A_ci, Y_c − m_c> = (Q_c 1)_i − m_c · E Σ_p A_ci,p`, with `m_c` the
running mean of the BatchNorm that normalises `Y_c` (0 where none follows). It has the
units of `Y²` summed over positions, per sample; only its order matters.

The raw-input forms (`singleton_scores`, `saliency_scores`, `subset_fidelity`, `compensation`) take a
layer and its input batch `(N, c_in, H, W)` for a conv, `(N, c_in)` or `(N, T, c_in)`
for a Linear; the pipeline uses the streaming forms on collected statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from modhifi_core.errors import InputError
from modhifi_core.statistics import LayerStatistics, kept_gram, layer_statistics

DEFAULT_RIDGE = 1e-4
# Batched Q_c[C, C] blocks are built in chunks of output channels of at most this many elements.
_CHUNK_ELEMENTS = 1 << 24


def kernel_slices(layer: nn.Module) -> Tensor:
    """The layer's weight as float64 `(c_out, c_in, kk)` (`kk = kh·kw`, 1 for Linear)."""
    weight = layer.weight.detach().double()
    return weight.reshape(weight.shape[0], weight.shape[1], -1)


def component_moments(stats: LayerStatistics, weight: Tensor, centered: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Sums over the calibration samples of `(Q_c 1)_i`, `Q_c[i, i]` (both `(c_out, c_in)`)
    and `1ᵀ Q_c 1` (`(c_out,)`), float64; divide by `stats.samples` for expectations.

    `weight`: `(c_out, c_in, kk)` as `kernel_slices` gives (the statistics' shapes)."""
    weight = weight.double()
    if weight.shape != stats.cross.shape:
        raise InputError(f"weight of shape {tuple(weight.shape)} does not match statistics {tuple(stats.cross.shape)}")
    q1 = (weight * stats.cross).sum(-1)
    qdiag = torch.einsum("cik,ikl,cil->ci", weight, stats.gram_diag, weight)
    energy = stats.output_sq.clone()
    if centered:
        mu = (weight * stats.mean_patch).sum(-1)  # μ_ci, (c_out, c_in)
        q1 = q1 - stats.positions * mu * mu.sum(1, keepdim=True)
        qdiag = qdiag - stats.positions * mu * mu
        energy = energy - stats.positions * mu.sum(1) ** 2
    return q1, qdiag.clamp_min(0.0), energy.clamp_min(0.0)


def singleton_from_moments(q1: Tensor, qdiag: Tensor, energy: Tensor) -> Tensor:
    """`s_ci = (Q_c 1)_i² / (Q_c[i, i] · 1ᵀ Q_c 1)`, 0 where a denominator vanishes: `(c_out, c_in)`."""
    denominator = qdiag * energy.unsqueeze(1)
    scores = torch.where(denominator > 0, q1 * q1 / denominator.clamp_min(torch.finfo(q1.dtype).tiny), 0.0)
    return scores.clamp(0.0, 1.0)


def scores_from_statistics(stats: LayerStatistics, layer: nn.Module, centered: bool = False) -> Tensor:
    """Singleton fidelities `s_ci = FS_c({i})` of `layer` (its current weights) from
    streaming statistics: float64 `(c_out, c_in)` in [0, 1]."""
    return singleton_from_moments(*component_moments(stats, kernel_slices(layer), centered))


def component_scores(
    kind: str, stats: LayerStatistics, layer: nn.Module, centre: Tensor | None = None, centered: bool = False
) -> Tensor:
    """The score of every component `(c, i)` of `layer` from its statistics, float64
    `(c_out, c_in)`: `kind="saliency"` — `R̃_ci` centred on `centre` (`m_c`, or None for
    0); `"fidelity"` — the singleton `s_ci`, centred iff `centered`. The one computation
    behind the score operation, ModHiFi-P's channel selection and ModHiFi-U's HiFi sets."""
    if kind == "saliency":
        return saliency_from_statistics(stats, layer, centre)
    if kind == "fidelity":
        return scores_from_statistics(stats, layer, centered)
    raise InputError(f"unknown score {kind!r}; choose saliency or fidelity")


def singleton_scores(layer: nn.Module, inputs: Tensor, centered: bool = False) -> Tensor:
    """Singleton fidelities of `layer` on the raw input batch `inputs`: float64 `(c_out, c_in)`."""
    return scores_from_statistics(layer_statistics(layer, inputs), layer, centered)


def saliency_from_statistics(stats: LayerStatistics, layer: nn.Module, bn_mean: Tensor | None = None) -> Tensor:
    """The saliency `R̃_ci = (Q_c 1)_i − m_c · E Σ_p A_ci,p` of `layer` (its current weights)
    from streaming statistics, no extra pass: `(Q_c 1)_i = w_ciᵀ M[i, c]` from the cross
    moments and `Σ_p A_ci,p = w_ciᵀ (Σ_p U_i,p)` from the mean patch times the positions.

    `E` is the mean over the `stats.samples` calibration samples (per sample, as for `Q`);
    `Y_c` is the layer's output without its bias, so for a biased layer pass the centre of
    that output (`running_mean − bias`, see `modhifi_core.pruning.coupling.Coupling.output_centre`).
    `bn_mean`: `(c_out,)` or None (= 0). Returns float64 `(c_out, c_in)`."""
    weight = kernel_slices(layer)
    if weight.shape != stats.cross.shape:
        raise InputError(f"weight of shape {tuple(weight.shape)} does not match statistics {tuple(stats.cross.shape)}")
    scores = (weight * stats.cross).sum(-1)
    if bn_mean is not None:
        centre = torch.as_tensor(bn_mean).to(scores).reshape(-1)
        if centre.shape != (weight.shape[0],):
            raise InputError(f"bn_mean must have shape ({weight.shape[0]},), got {tuple(centre.shape)}")
        scores = scores - centre.unsqueeze(1) * (weight * stats.input_sum).sum(-1)
    return scores / max(stats.samples, 1)


def saliency_scores(layer: nn.Module, inputs: Tensor, bn_mean: Tensor | None = None) -> Tensor:
    """`R̃_ci = E <A_ci, Y_c − m_c>` of `layer` on the raw input batch `inputs` (`(N, c_in, H, W)`
    for a conv, `(N, c_in)` or `(N, T, c_in)` for a Linear): float64 `(c_out, c_in)`.

    `E` averages over the N samples (per sample; <.,.> sums over output positions or
    tokens); `Y_c = Σ_i A_ci` is the output without bias; `bn_mean` is `m_c`, `(c_out,)`,
    or None for `m_c = 0`. Higher = more salient; negative = anti-aligned with `Y_c − m_c`."""
    return saliency_from_statistics(layer_statistics(layer, inputs), layer, bn_mean)


def saliency_order_scores(
    stats: LayerStatistics, layer: nn.Module, bn_mean: Tensor | None = None, saliency: Tensor | None = None
) -> Tensor:
    """`R̃_ci / E||Y_c − m_c||²`: the saliency made comparable across output channels (a
    positive per-row scale, so each row's order is that of `R̃`); 0 for a silent output.
    `E||Y_c − m_c||² = E Σ_p Y² − 2 m_c E Σ_p Y + P m_c²` from the same statistics.
    `saliency`: `R̃` already computed from `stats` (`component_scores`), else computed here."""
    scores = saliency_from_statistics(stats, layer, bn_mean) if saliency is None else saliency.double()
    samples = max(stats.samples, 1)
    energy = stats.output_sq / samples
    if bn_mean is not None:
        centre = torch.as_tensor(bn_mean).to(energy).reshape(-1)
        output_sum = (kernel_slices(layer) * stats.input_sum).sum((1, 2)) / samples
        energy = energy - 2 * centre * output_sum + (stats.positions / samples) * centre**2
    energy = energy.unsqueeze(1)
    return torch.where(energy > 0, scores / energy.clamp_min(torch.finfo(scores.dtype).tiny), 0.0)


def kept_similarity(
    gram: Tensor,
    stats: LayerStatistics,
    weight: Tensor,
    kept: Tensor,
    centered: bool = False,
    out_channels: Tensor | None = None,
) -> Tensor:
    """Sums of `Q_c[C, C]` for the kept input channels `C` (`kept`, 1-D indices) and the
    given output channels (default all): float64 `(len(out_channels), |C|, |C|)`.

    `gram`: the kept-set Gram `(|C|·kk, |C|·kk)` from `collect_kept_gram`."""
    size, kk = len(kept), weight.shape[-1]
    gram = gram.double()
    if centered:
        mean = stats.mean_patch[kept].reshape(-1)
        gram = gram - stats.positions * torch.outer(mean, mean)
    blocks = gram.view(size, kk, size, kk)
    w = weight.double()[:, kept] if out_channels is None else weight.double()[out_channels][:, kept]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, size * size * kk))
    parts = [
        torch.einsum("cik,ikjl,cjl->cij", w[start : start + chunk], blocks, w[start : start + chunk])
        for start in range(0, w.shape[0], chunk)
    ]
    return torch.cat(parts) if parts else w.new_zeros(0, size, size)


def optimal_compensation(similarity: Tensor, q1_kept: Tensor, ridge: float = DEFAULT_RIDGE) -> Tensor:
    """`δ* = 1 + (Q[C,C] + λ·mean(diag Q[C,C]) I)⁻¹ Q[C,C̄] 1` for a batch of outputs.

    `similarity`: `Q_c[C, C]` `(c, |C|, |C|)`; `q1_kept`: `(Q_c 1)_C` `(c, |C|)` (both sums
    or both expectations; `Q[C,C̄] 1 = (Q 1)_C − Q[C,C] 1`). Returns δ `(c, |C|)`, float64.
    With λ = 0 a singular block gets the minimum-norm least-squares correction."""
    if ridge < 0:
        raise InputError(f"ridge must be >= 0, got {ridge}")
    similarity, q1_kept = similarity.double(), q1_kept.double()
    residual = q1_kept - similarity.sum(-1)
    eye = torch.eye(similarity.shape[-1], dtype=similarity.dtype, device=similarity.device)
    scale = torch.diagonal(similarity, dim1=-2, dim2=-1).mean(-1).clamp_min(0.0)
    system = similarity + ridge * scale.view(-1, 1, 1) * eye
    factor, info = torch.linalg.cholesky_ex(system)
    correction = torch.cholesky_solve(residual.unsqueeze(-1), factor).squeeze(-1)
    failed = (info != 0) | (scale <= 0)
    if failed.any():
        fallback = torch.linalg.lstsq(system[failed], residual[failed].unsqueeze(-1), driver="gelsd")
        correction[failed] = fallback.solution.squeeze(-1)
    return 1.0 + correction


def _subset_moments(
    layer: nn.Module, inputs: Tensor, out_channel: int, subset: Sequence[int], centered: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(Q_c[C, C], (Q_c 1)_C, 1ᵀ Q_c 1, C) for one output channel on a raw batch (sums)."""
    stats = layer_statistics(layer, inputs)
    weight = kernel_slices(layer)
    c_out, c_in = weight.shape[:2]
    if not 0 <= out_channel < c_out:
        raise InputError(f"out_channel {out_channel} is outside [0, {c_out})")
    kept = torch.as_tensor(list(subset), dtype=torch.long)
    if kept.numel() and (kept.min() < 0 or kept.max() >= c_in or len(set(kept.tolist())) != kept.numel()):
        raise InputError(f"subset must hold distinct input channels in [0, {c_in}), got {list(subset)}")
    q1, _, energy = component_moments(stats, weight, centered)
    gram = kept_gram(layer, inputs, kept)
    channel = torch.tensor([out_channel])
    similarity = kept_similarity(gram, stats, weight, kept, centered, channel)[0]
    return similarity, q1[out_channel, kept], energy[out_channel], kept


def subset_fidelity(
    layer: nn.Module, inputs: Tensor, out_channel: int, subset: Sequence[int], centered: bool = False
) -> float:
    """`FS_c(C) = 1 − min_δ E||Y_c − Σ_{i∈C} δ_i A_ci||² / E||Y_c||²` in [0, 1] for output
    channel `c = out_channel` and input channels `C = subset` (exact minimum, no ridge).
    A silent output (`E||Y_c||² = 0`) has fidelity 1 for any subset."""
    similarity, q1_kept, energy, kept = _subset_moments(layer, inputs, out_channel, subset, centered)
    if energy <= 0:
        return 1.0
    if kept.numel() == 0:
        return 0.0
    explained = q1_kept @ torch.linalg.lstsq(similarity, q1_kept.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
    return float((explained / energy).clamp(0.0, 1.0))


def compensation(
    layer: nn.Module,
    inputs: Tensor,
    out_channel: int,
    subset: Sequence[int],
    ridge: float = 0.0,
    centered: bool = False,
) -> Tensor:
    """The optimal multipliers `δ*` of the kept kernel slices `W[c, i], i ∈ subset` once
    the other inputs are dropped: float64 `(len(subset),)`, in the order of `subset`.
    `ridge` is λ of method.md (scaled by the mean diagonal of `Q_c[C, C]`)."""
    similarity, q1_kept, _, kept = _subset_moments(layer, inputs, out_channel, subset, centered)
    if kept.numel() == 0:
        return torch.zeros(0, dtype=torch.float64)
    return optimal_compensation(similarity.unsqueeze(0), q1_kept.unsqueeze(0), ridge)[0]
