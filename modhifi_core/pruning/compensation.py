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

Order (`sequential_compensation`, beyond the paper, which does not say): `joint` fits every
layer at once on the dense model's own inputs (`Y_c = Σ_i A_ci`, the statistics of one
pass). `sequential` walks the consumer layers in execution order on a masked copy (dropped
input slices zeroed everywhere, so the network already computes the pruned function) and
refits each on its *current* inputs `Φ'` — produced by the already pruned and refit
upstream layers, BN re-estimated just before — towards the *dense* model's output `Y_c`:
`min E||Y_c − Σ_{i∈C} δ_ci A'_ci||²` (scalar) or `min E||Y − W' U'_C||²` (full). The
cross moments are `E[U' Yᵀ]` (dense outputs, pruned inputs), the Gram is that of `U'`,
and centring uses the dense output's mean, so upstream errors are corrected downstream.
Cost: per consumer layer one BN recalibration pass and one pass of both models.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.fidelity import kept_similarity, kernel_slices, optimal_compensation
from modhifi_core.statistics import LayerStatistics, kept_gram, target_statistics

ORDERS = ("joint", "sequential")

_CHUNK_ELEMENTS = 1 << 24


@torch.no_grad()
def scalar_compensation(
    layer: nn.Module,
    stats: LayerStatistics,
    gram: Tensor,
    kept: Tensor,
    centered: bool,
    ridge: float,
    output_mean: Tensor | None = None,
) -> None:
    """Scale each kept slice `W[c, i], i ∈ kept` of `layer` in place by `δ*_ci`
    (slices that are exactly zero stay zero). `output_mean`: the per-position mean of the
    target output to centre on, `(c_out,)` (default: that of the layer's own output)."""
    weight = kernel_slices(layer)
    view = layer.weight.view(layer.weight.shape[0], layer.weight.shape[1], -1)
    if weight.shape[-1] == 1:
        refit = _ridge_refit(weight, stats, gram, kept, centered, ridge, output_mean)[0]
        view[:, kept] = torch.where(weight[:, kept] != 0, refit.unsqueeze(-1), 0.0).to(layer.weight.dtype)
        return
    q1 = (weight * stats.cross).sum(-1)
    if centered:
        mu = (weight * stats.mean_patch).sum(-1)  # μ_ci
        centre = mu.sum(1) if output_mean is None else output_mean.double()
        q1 = q1 - stats.positions * mu * centre.unsqueeze(1)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, len(kept) ** 2))
    for start in range(0, weight.shape[0], chunk):
        outputs = torch.arange(start, min(start + chunk, weight.shape[0]), device=weight.device)
        similarity = kept_similarity(gram, stats, weight, kept, centered, outputs)
        delta = optimal_compensation(similarity, q1[outputs][:, kept], ridge)
        view[start : start + len(outputs), kept] *= delta.to(layer.weight.dtype).unsqueeze(-1)


@torch.no_grad()
def full_compensation(
    layer: nn.Module,
    stats: LayerStatistics,
    gram: Tensor,
    kept: Tensor,
    feeds_batchnorm: bool,
    ridge: float,
    output_mean: Tensor | None = None,
) -> None:
    """Refit the kept kernels `W[:, kept]` of `layer` in place by ridge least squares
    (`output_mean` as in `scalar_compensation`)."""
    weight = kernel_slices(layer)
    c_out, _, kk = weight.shape
    affine = not feeds_batchnorm and layer.bias is not None
    refit, output_mean, patch = _ridge_refit(weight, stats, gram, kept, feeds_batchnorm or affine, ridge, output_mean)
    view = layer.weight.view(c_out, layer.weight.shape[1], -1)
    view[:, kept] = refit.reshape(c_out, len(kept), kk).to(layer.weight.dtype)
    if affine:
        layer.bias += (output_mean - refit @ patch).to(layer.bias.dtype)


def _ridge_refit(
    weight: Tensor,
    stats: LayerStatistics,
    gram: Tensor,
    kept: Tensor,
    centered: bool,
    ridge: float,
    output_mean: Tensor | None = None,
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
    if output_mean is None:
        output_mean = (weight * stats.mean_patch).sum((1, 2))
    output_mean = output_mean.double()
    if centered:
        gram = gram - stats.positions * torch.outer(patch, patch)
        cross = cross - stats.positions * torch.outer(output_mean, patch)
    scale = torch.diagonal(gram).mean().clamp_min(0.0)
    system = gram + ridge * scale * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    rhs = cross.T - gram @ current.T
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0 and scale > 0:
        update = torch.cholesky_solve(rhs, factor)
    else:
        update = torch.linalg.lstsq(system, rhs, driver="gelsd").solution
    return current + update.T, output_mean, patch


@torch.no_grad()
def sequential_compensation(
    model: nn.Module,
    batches: list[Tensor],
    kept_inputs: dict[str, Tensor],
    mask: Callable[[], None],
    feeds_batchnorm: Callable[[str], bool],
    mode: str,
    ridge: float,
) -> None:
    """Sequential order (module docstring): `mask()` zeroes the dropped input slices of
    `model` in place; then each layer of `kept_inputs` (name -> kept input indices), in
    execution order, is refit (`mode` `scalar` or `full`) on the current inputs towards the
    outputs of a dense copy taken before masking. BN is re-estimated on `batches` before
    each refit; the caller recalibrates once more after its surgery."""
    dense = copy.deepcopy(model).eval()
    order = execution_order(model, batches[0][:1], list(kept_inputs))
    mask()
    modules = dict(model.named_modules())
    for name in order:
        recalibrate_batchnorm(model, batches)
        stats, gram, target_mean = _target_moments(model, dense, batches, name, kept_inputs[name])
        refit = scalar_compensation if mode == "scalar" else full_compensation
        refit(modules[name], stats, gram, kept_inputs[name], feeds_batchnorm(name), ridge, target_mean)


def execution_order(model: nn.Module, example: Tensor, names: list[str]) -> list[str]:
    """`names` in the order their modules first run on `example` (never-run ones last)."""
    modules = dict(model.named_modules())
    seen: list[str] = []

    def hook_for(name: str) -> Callable:
        def hook(*_: object) -> None:
            if name not in seen:
                seen.append(name)

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in names]
    try:
        model.eval()(example.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return seen + [name for name in names if name not in seen]


def _target_moments(
    model: nn.Module, dense: nn.Module, batches: list[Tensor], name: str, kept: Tensor
) -> tuple[LayerStatistics, Tensor, Tensor]:
    """Statistics of `name` with `model`'s inputs and `dense`'s outputs as targets, the kept
    Gram of those inputs, and the dense output's per-position mean without bias `(c_out,)`."""
    layer, dense_layer = model.get_submodule(name), dense.get_submodule(name)
    captured: dict[str, Tensor] = {}
    handles = [
        dense_layer.register_forward_hook(lambda m, a, out: captured.__setitem__("target", out)),
        layer.register_forward_hook(lambda m, a, out: captured.__setitem__("input", a[0])),
    ]
    device = next(model.parameters()).device
    stats, gram, output_sum = None, None, 0.0
    try:
        for batch in batches:
            dense(batch.to(device))
            model(batch.to(device))
            target = captured["target"]
            part = target_statistics(layer, captured["input"], target)
            part_gram = kept_gram(layer, captured["input"], kept)
            stats = part if stats is None else stats + part
            gram = part_gram if gram is None else gram + part_gram
            per_channel = target.reshape(-1, target.shape[-1]).sum(0) if target.ndim != 4 else target.sum((0, 2, 3))
            output_sum = output_sum + per_channel.double()
    finally:
        for handle in handles:
            handle.remove()
    bias = dense_layer.bias.detach().double() if dense_layer.bias is not None else 0.0
    return stats, gram, output_sum / max(stats.positions, 1) - bias
