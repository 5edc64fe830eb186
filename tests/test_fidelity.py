"""Subset Fidelity against brute force: every component A_ci materialised, every
least-squares problem solved directly.

All math runs in float64. Sums have at most a few thousand terms of O(1) size, so
accumulated rounding is ~1e-12 relative; rtol 1e-8 leaves room for the conditioning of
the small least-squares systems while still catching any formula error (those are O(1)).
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.fidelity import (
    compensation,
    optimal_compensation,
    saliency_from_statistics,
    saliency_order_scores,
    saliency_scores,
    singleton_scores,
    subset_fidelity,
)
from modhifi_core.statistics import layer_statistics

RTOL = 1e-8


CONV_CASES = [
    dict(kernel_size=3, stride=2, padding=1, dilation=1),
    dict(kernel_size=(2, 3), stride=1, padding=(1, 0), dilation=2),
    dict(kernel_size=(3, 1), stride=(2, 1), padding=0, dilation=1),
    dict(kernel_size=3, stride=1, padding="same", dilation=1),
    dict(kernel_size=1, stride=2, padding=0, dilation=1),
]


def make_conv(case: dict, c_in: int = 5, c_out: int = 4, bias: bool = True, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(c_in, c_out, bias=bias, **case).double()


def conv_components(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A[n, c, i, p] = W_ci ⋆ Φ_i, one single-channel conv per (c, i)."""
    out = []
    for c in range(layer.out_channels):
        per_input = []
        for i in range(layer.in_channels):
            a = F.conv2d(
                x[:, i : i + 1],
                layer.weight[c : c + 1, i : i + 1],
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
            )
            per_input.append(a.flatten(1))
        out.append(torch.stack(per_input, 1))
    return torch.stack(out, 1).detach()


def linear_components(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A[n, c, i, t] = W[c, i] x[n, t, i] (a row input is one position)."""
    rows = x if x.ndim == 3 else x.unsqueeze(1)
    return torch.einsum("ci,nti->ncit", layer.weight, rows).detach()


def design(components: torch.Tensor, c: int, centered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression form of output c: columns A_ci flattened over (n, p); target Y_c = Σ_i A_ci."""
    columns = components[:, c].permute(0, 2, 1).reshape(-1, components.shape[2])
    target = columns.sum(1)
    if centered:
        columns = columns - columns.mean(0)
        target = target - target.mean()
    return columns, target


def brute_fidelity(components: torch.Tensor, c: int, subset: list[int], centered: bool) -> float:
    columns, target = design(components, c, centered)
    if not subset:
        return 0.0
    solution = torch.linalg.lstsq(columns[:, subset], target.unsqueeze(1), driver="gelsd").solution
    residual = target - columns[:, subset] @ solution.squeeze(1)
    return float(1 - residual.square().sum() / target.square().sum())


def cases():
    torch.manual_seed(1)
    for case in CONV_CASES:
        layer = make_conv(case)
        yield f"conv{case}", layer, torch.randn(6, 5, 9, 8, dtype=torch.float64) + 0.3, conv_components
    linear = nn.Linear(5, 4).double()
    yield "linear(N,c_in)", linear, torch.randn(40, 5, dtype=torch.float64) + 0.3, linear_components
    yield "linear(N,T,c_in)", linear, torch.randn(7, 6, 5, dtype=torch.float64) - 0.2, linear_components


CASES = list(cases())
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("name,layer,x,components_of", CASES, ids=IDS)
def test_singleton_scores_match_brute_force(name, layer, x, components_of, centered):
    components = components_of(layer, x)
    scores = singleton_scores(layer, x, centered=centered)
    assert scores.shape == (layer.weight.shape[0], layer.weight.shape[1])
    c_out, c_in = scores.shape
    expected = torch.tensor(
        [[brute_fidelity(components, c, [i], centered) for i in range(c_in)] for c in range(c_out)], dtype=torch.float64
    )
    torch.testing.assert_close(scores, expected, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("name,layer,x,components_of", CASES, ids=IDS)
def test_subset_fidelity_matches_brute_force(name, layer, x, components_of, centered):
    components = components_of(layer, x)
    for subset in ([0], [1, 3], [0, 2, 4], [4, 1, 2, 0]):
        for c in (0, 3):
            got = subset_fidelity(layer, x, c, subset, centered=centered)
            assert got == pytest.approx(brute_fidelity(components, c, subset, centered), rel=RTOL, abs=1e-12)


@pytest.mark.parametrize("name,layer,x,components_of", CASES, ids=IDS)
def test_compensation_is_the_least_squares_solution(name, layer, x, components_of):
    components = components_of(layer, x)
    for centered in (False, True):
        columns, target = design(components, 2, centered)
        subset = [3, 0, 1]
        expected = torch.linalg.lstsq(columns[:, subset], target.unsqueeze(1)).solution.squeeze(1)
        got = compensation(layer, x, 2, subset, ridge=0.0, centered=centered)
        torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("ridge", [0.0, 1e-4, 0.1, 10.0])
@pytest.mark.parametrize("name,layer,x,components_of", CASES, ids=IDS)
def test_compensation_never_increases_the_error(name, layer, x, components_of, ridge):
    columns, target = design(components_of(layer, x), 1, centered=False)
    subset = [0, 2]
    delta = compensation(layer, x, 1, subset, ridge=ridge)
    error = (target - columns[:, subset] @ delta).square().sum()
    dropped_only = (target - columns[:, subset].sum(1)).square().sum()
    assert error <= dropped_only * (1 + 1e-12)
    # The ridge pulls δ toward 1 (the unmodified kernels): argmin err + λ·m·||δ − 1||².
    gram = columns[:, subset].T @ columns[:, subset]
    penalty = ridge * torch.diagonal(gram).mean()
    system = gram + penalty * torch.eye(len(subset), dtype=torch.float64)
    expected = torch.linalg.solve(system, columns[:, subset].T @ target + penalty * torch.ones(len(subset)))
    torch.testing.assert_close(delta, expected.double(), rtol=1e-7, atol=1e-10)


def orthogonal_inputs(rows: int, c_in: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(rows, c_in, dtype=torch.float64, generator=generator))
    scales = torch.rand(c_in, dtype=torch.float64, generator=generator) * 3 + 0.1
    return basis * scales


@pytest.mark.parametrize("seed", range(3))
def test_theorem_3_9_top_k_singletons_are_the_best_subset_when_q_is_diagonal(seed):
    c_in, k = 7, 3
    linear = nn.Linear(c_in, 3, bias=False).double()
    torch.manual_seed(seed)
    nn.init.normal_(linear.weight)
    x = orthogonal_inputs(50, c_in, seed)  # uncorrelated contributions: Q_c diagonal
    conv = nn.Conv2d(c_in, 3, 1, bias=False).double()
    conv.weight.data = linear.weight.data.view(3, c_in, 1, 1).clone()
    x_conv = x.view(2, 5, 5, c_in).permute(0, 3, 1, 2)
    for layer, inputs in ((linear, x), (conv, x_conv)):
        scores = singleton_scores(layer, inputs)
        for c in range(3):
            fidelities = {s: subset_fidelity(layer, inputs, c, s) for s in itertools.combinations(range(c_in), k)}
            best = max(fidelities.values())
            top_k = tuple(sorted(scores[c].argsort(descending=True)[:k].tolist()))
            assert fidelities[top_k] == pytest.approx(best, rel=1e-10)
            # with Q diagonal, FS is additive over singletons
            assert fidelities[top_k] == pytest.approx(float(scores[c, list(top_k)].sum()), rel=1e-8)


@pytest.mark.parametrize("name,layer,x,components_of", CASES[:3] + CASES[-1:], ids=IDS[:3] + IDS[-1:])
def test_subset_fidelity_is_monotone_from_zero_to_one(name, layer, x, components_of):
    generator = torch.Generator().manual_seed(3)
    for centered in (False, True):
        for c in range(layer.weight.shape[0]):
            order = torch.randperm(layer.weight.shape[1], generator=generator).tolist()
            chain = [subset_fidelity(layer, x, c, order[:size], centered) for size in range(len(order) + 1)]
            assert chain[0] == 0.0
            assert chain[-1] == pytest.approx(1.0, abs=1e-10)
            assert all(b >= a - 1e-12 for a, b in zip(chain, chain[1:]))
            assert all(0.0 <= f <= 1.0 for f in chain)


def test_singular_similarity_gets_the_minimum_norm_correction():
    # Two identical input channels: Q[C, C] is singular; the fit still reproduces Y.
    layer = nn.Linear(3, 1, bias=False).double()
    layer.weight.data = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    base = torch.randn(30, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.cat([base, base, torch.randn(30, 1, dtype=torch.float64)], 1)
    assert subset_fidelity(layer, x, 0, [0, 1]) == pytest.approx(subset_fidelity(layer, x, 0, [0]), rel=1e-10)
    delta = compensation(layer, x, 0, [0, 1, 2])
    torch.testing.assert_close(delta, torch.ones(3, dtype=torch.float64))


def test_optimal_compensation_keeps_weights_of_silent_outputs():
    similarity = torch.zeros(2, 3, 3, dtype=torch.float64)
    delta = optimal_compensation(similarity, torch.zeros(2, 3), ridge=1e-4)
    torch.testing.assert_close(delta, torch.ones(2, 3, dtype=torch.float64))


def test_bad_arguments_are_refused_with_one_line():
    layer = nn.Linear(4, 2).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    with pytest.raises(InputError, match="out_channel 5"):
        subset_fidelity(layer, x, 5, [0])
    with pytest.raises(InputError, match="distinct input channels"):
        compensation(layer, x, 0, [1, 1])
    with pytest.raises(InputError, match="not a supported"):
        singleton_scores(nn.Conv2d(4, 4, 3, groups=2), torch.randn(2, 4, 5, 5))
    with pytest.raises(InputError, match="NaN"):
        singleton_scores(layer, torch.full((2, 4), float("nan"), dtype=torch.float64))


def brute_saliency(components: torch.Tensor, bn_mean: torch.Tensor | None) -> torch.Tensor:
    """R̃[c, i] = mean over samples of Σ_p A[n, c, i, p] (Y[n, c, p] − m_c)."""
    output = components.sum(2, keepdim=True)  # (n, c, 1, p)
    if bn_mean is not None:
        output = output - bn_mean.view(1, -1, 1, 1)
    return (components * output).sum(-1).mean(0)


@pytest.mark.parametrize("centre", ["none", "bn_mean"])
@pytest.mark.parametrize("name,layer,x,components_of", CASES, ids=IDS)
def test_saliency_scores_match_brute_force(name, layer, x, components_of, centre):
    components = components_of(layer, x)
    bn_mean = None if centre == "none" else torch.linspace(-0.7, 0.9, layer.weight.shape[0], dtype=torch.float64)
    scores = saliency_scores(layer, x, bn_mean=bn_mean)
    assert scores.shape == (layer.weight.shape[0], layer.weight.shape[1])
    torch.testing.assert_close(scores, brute_saliency(components, bn_mean), rtol=RTOL, atol=1e-10)


@pytest.mark.parametrize("name,layer,x,components_of", CASES, ids=IDS)
def test_streaming_saliency_from_merged_shards_equals_the_raw_form(name, layer, x, components_of):
    bn_mean = torch.linspace(0.5, -0.4, layer.weight.shape[0], dtype=torch.float64)
    merged = layer_statistics(layer, x[:2]) + layer_statistics(layer, x[2:])
    torch.testing.assert_close(
        saliency_from_statistics(merged, layer, bn_mean), saliency_scores(layer, x, bn_mean), rtol=RTOL, atol=1e-10
    )


@pytest.mark.parametrize("name,layer,x,components_of", CASES, ids=IDS)
def test_saliency_order_scores_keep_each_rows_order_and_sum_to_one_when_centred_on_the_mean(
    name, layer, x, components_of
):
    components = components_of(layer, x)
    output = components.sum(2)  # (n, c, p)
    mean = output.mean((0, 2))  # centring on the output's own mean: Σ_i R̃_ci = E||Y_c − m_c||²
    stats = layer_statistics(layer, x)
    ordered = saliency_order_scores(stats, layer, mean)
    raw = saliency_from_statistics(stats, layer, mean)
    assert torch.equal(ordered.argsort(1), raw.argsort(1))
    torch.testing.assert_close(ordered.sum(1), torch.ones(len(mean), dtype=torch.float64), rtol=1e-8, atol=1e-10)


def test_saliency_refuses_a_bn_mean_of_the_wrong_shape():
    layer = nn.Linear(3, 2).double()
    with pytest.raises(InputError, match="bn_mean must have shape"):
        saliency_scores(layer, torch.randn(4, 3, dtype=torch.float64), bn_mean=torch.zeros(3))
