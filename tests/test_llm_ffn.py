"""FFN-neuron pruning of transformers (method.md §3b) on tiny from-config models."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from llm_models import example_inputs, outputs, tiny

from modhifi_core.errors import InputError
from modhifi_core.pruning.ffn import (
    collect_ffn_statistics,
    compensate,
    count_parameters,
    ffn_scores,
    find_ffn_blocks,
    flops_per_token,
    greedy_removal_order,
    kept_neurons,
    neuron_rows,
    prune_transformer,
    removal_rank,
)

FAMILIES = ("llama", "qwen2", "gpt2", "bert", "vit")


def _activations(model, inputs) -> dict[str, torch.Tensor]:
    """Every down projection's input, stored whole (the brute-force reference)."""
    modules = dict(model.named_modules())
    stored, handles = {}, []
    for block in find_ffn_blocks(model):

        def keep(_m, args, name=block.name):
            stored[name] = args[0].reshape(-1, args[0].shape[-1]).double()

        handles.append(modules[block.down_name].register_forward_pre_hook(keep))
    outputs(model, inputs)
    for handle in handles:
        handle.remove()
    return stored


@pytest.mark.parametrize("family", FAMILIES)
def test_statistics_match_brute_force_layerwise_and_in_one_pass(family):
    model = tiny(family)
    inputs = example_inputs(family)
    stored = _activations(model, inputs)
    for layerwise in (True, False):
        stats = collect_ffn_statistics(model, [inputs], layerwise=layerwise, product_dtype=torch.float64)
        default = collect_ffn_statistics(model, [inputs], layerwise=layerwise)  # float32 products per batch
        assert set(stats) == set(stored)
        for name, h in stored.items():
            # float64 sums of the same products: only summation order differs
            torch.testing.assert_close(stats[name].gram, h.T @ h, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(default[name].gram, h.T @ h, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(stats[name].mean, h.mean(0), rtol=1e-10, atol=1e-12)
            assert stats[name].tokens == h.shape[0]


def test_statistics_add_over_batches():
    model = tiny("llama")
    a, b = example_inputs("llama", seed=1), example_inputs("llama", seed=2)
    both = collect_ffn_statistics(model, [a, b], product_dtype=torch.float64)
    one, two = (collect_ffn_statistics(model, [x], product_dtype=torch.float64) for x in (a, b))
    for name in both:
        torch.testing.assert_close(both[name].gram, one[name].gram + two[name].gram, rtol=1e-10, atol=1e-10)
        assert both[name].tokens == one[name].tokens + two[name].tokens


@pytest.mark.parametrize("layerwise", (True, False))
def test_sharded_statistics_equal_the_single_process_ones(layerwise):
    """Two worker threads, three shards: the same sums up to float64 addition order."""
    model = tiny("llama")
    ids = torch.cat([example_inputs("llama", seed=s)["input_ids"] for s in range(3)])  # 9 rows: batches of 4, 4, 1
    single = collect_ffn_statistics(model, ids, layerwise=layerwise, product_dtype=torch.float64)
    with ThreadPoolExecutor(2) as executor:
        sharded = collect_ffn_statistics(
            model, ids, layerwise=layerwise, product_dtype=torch.float64, executor=executor, shards=3
        )
    assert set(sharded) == set(single)
    for name, stats in single.items():
        torch.testing.assert_close(sharded[name].gram, stats.gram, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sharded[name].total, stats.total, rtol=1e-12, atol=1e-12)
        assert sharded[name].tokens == stats.tokens == ids.numel()
    with pytest.raises(InputError, match="one tensor"), ThreadPoolExecutor(1) as executor:
        collect_ffn_statistics(model, [{"input_ids": ids}], executor=executor)


def test_scores_follow_their_definitions():
    model = tiny("gpt2")
    inputs = example_inputs("gpt2")
    h = _activations(model, inputs)
    stats = collect_ffn_statistics(model, [inputs], product_dtype=torch.float64)  # exact: formulas checked
    block = find_ffn_blocks(model)[0]
    w = dict(model.named_modules())[block.down_name].weight.T.double()  # Conv1D: (out, neurons)
    x = h[block.name]
    y = x @ w.T  # the down projection's output without bias, per token
    energy = w.pow(2).sum(0) * x.pow(2).mean(0)
    # R̃_j = Σ_c E[y_c · W_cj h_j]
    saliency = torch.stack([(y * (x[:, j : j + 1] * w[:, j])).sum(1).mean() for j in range(x.shape[1])])
    fluctuation = w.pow(2).sum(0) * x.var(0, unbiased=False)
    torch.testing.assert_close(ffn_scores(model, block, stats[block.name], "energy"), energy)
    torch.testing.assert_close(ffn_scores(model, block, stats[block.name], "saliency"), saliency)
    torch.testing.assert_close(ffn_scores(model, block, stats[block.name], "fluctuation"), fluctuation)
    wanda = ffn_scores(model, block, stats[block.name], "wanda-sp")
    assert torch.equal(torch.argsort(wanda), torch.argsort(energy))  # Wanda-sp = sqrt(energy)
    rand = [ffn_scores(model, block, stats[block.name], "random", seed=s) for s in (0, 0, 1)]
    assert torch.equal(rand[0], rand[1]) and not torch.equal(rand[0], rand[2])
    with pytest.raises(InputError, match="unknown FFN score"):
        ffn_scores(model, block, stats[block.name], "bogus")


@pytest.mark.parametrize("family", ("llama", "gpt2"))
def test_least_squares_refit_is_the_least_squares_optimum(family):
    """Ridge 0: W'[:, K] minimises Σ_tokens ||W h − W'_K h_K||² (affine when the layer has a bias)."""
    model = tiny(family)
    inputs = example_inputs(family, batch=8, length=16)
    h = _activations(model, inputs)
    stats = collect_ffn_statistics(model, [inputs], product_dtype=torch.float64)  # exact: formulas checked
    block = find_ffn_blocks(model)[0]
    layer = dict(model.named_modules())[block.down_name]
    w = (layer.weight.T if family == "gpt2" else layer.weight).double().clone()
    kept = torch.arange(0, block.width, 2)
    x = h[block.name]
    target = x @ w.T
    design = x[:, kept]
    if layer.bias is not None:
        design = torch.cat([design, torch.ones(len(x), 1, dtype=design.dtype)], 1)
        target = target + layer.bias.double()
    solution = torch.linalg.lstsq(design, target).solution.T  # (out, |K| [+1])
    compensate(model, block, stats[block.name], kept, "ls", ridge=0.0)
    refit = (layer.weight.T if family == "gpt2" else layer.weight).double()[:, kept]
    torch.testing.assert_close(refit, solution[:, : len(kept)], rtol=1e-4, atol=1e-5)  # fp32 weights
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.double(), solution[:, -1], rtol=1e-4, atol=1e-5)


def test_delta_star_equals_least_squares_without_ridge():
    model = tiny("llama")
    inputs = example_inputs("llama", batch=8, length=16)
    stats = collect_ffn_statistics(model, [inputs], product_dtype=torch.float64)  # exact: formulas checked
    block = find_ffn_blocks(model)[0]
    kept = torch.arange(0, block.width, 3)
    by_ls, by_delta = copy.deepcopy(model), copy.deepcopy(model)
    compensate(by_ls, block, stats[block.name], kept, "ls", ridge=0.0)
    compensate(by_delta, block, stats[block.name], kept, "delta", ridge=0.0)
    ls = dict(by_ls.named_modules())[block.down_name].weight
    delta = dict(by_delta.named_modules())[block.down_name].weight
    torch.testing.assert_close(delta, ls, rtol=1e-3, atol=1e-5)
    assert not torch.allclose(ls, dict(model.named_modules())[block.down_name].weight)


def _refit_error(w: torch.Tensor, gram: torch.Tensor, kept: list[int]) -> float:
    """min over W' of Σ_t ||W h_t − W' h_t[K]||² from the Gram: tr(W G Wᵀ) − tr(W G_:K G_KK⁻¹ G_K: Wᵀ)."""
    total = torch.trace(w @ gram @ w.T)
    if not kept:
        return total.item()
    cross = w @ gram[:, kept]  # (out, |K|)
    return (total - torch.trace(cross @ torch.linalg.solve(gram[kept][:, kept], cross.T))).item()


def _brute_force_greedy(w: torch.Tensor, gram: torch.Tensor, removals: int) -> list[int]:
    alive, order = list(range(gram.shape[0])), []
    for _ in range(removals):
        errors = {j: _refit_error(w, gram, [k for k in alive if k != j]) for j in alive}
        order.append(min(errors, key=errors.get))
        alive.remove(order[-1])
    return order


def _correlated_layer(out: int = 5, n: int = 9, tokens: int = 200, seed: int = 0):
    """A down projection `(out, n)` and the Gram of correlated, unevenly scaled inputs."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, n, generator=g, dtype=torch.float64) @ torch.randn(n, n, generator=g, dtype=torch.float64)
    h = h * torch.linspace(0.2, 3.0, n, dtype=torch.float64)
    return torch.randn(out, n, generator=g, dtype=torch.float64), h.T @ h


def test_exact_greedy_removal_is_the_brute_force_greedy_order():
    """step=1, ridge 0: each removal is the column whose loss after the refit of the rest is least."""
    w, gram = _correlated_layer()
    order = greedy_removal_order(w, gram, removals=7, ridge=0.0, step=1)
    assert order.tolist() == _brute_force_greedy(w, gram, 7)


def test_greedy_refuses_a_matrix_that_is_no_gram_in_one_line():
    w, gram = _correlated_layer()
    indefinite = gram - 2 * gram.diagonal().max() * torch.eye(len(gram), dtype=gram.dtype)
    with pytest.raises(InputError, match="not a Gram matrix"):
        greedy_removal_order(w, indefinite, removals=3)
    assert len(greedy_removal_order(w, torch.zeros_like(gram), removals=3)) == 3  # all-zero inputs still rank


def test_blocked_greedy_keeps_a_set_no_worse_than_energy_and_ranks_removals_lowest():
    w, gram = _correlated_layer(out=12, n=64, tokens=400, seed=1)
    removals = 40
    order = greedy_removal_order(w, gram, removals, ridge=0.0, step=8)
    assert len(set(order.tolist())) == removals
    scores = removal_rank(order, 64)
    kept = kept_neurons(scores, 64 - removals)
    assert set(kept.tolist()).isdisjoint(order.tolist())
    energy = w.pow(2).sum(0) * gram.diagonal()
    by_energy = kept_neurons(energy, 64 - removals)
    # the greedy set's refit error is below energy's (measured: see the assertion message)
    greedy_error, energy_error = (_refit_error(w, gram, k.tolist()) for k in (kept, by_energy))
    assert greedy_error < energy_error, (greedy_error, energy_error)


@pytest.mark.parametrize("fraction", (0.25, 0.5, 0.75))
def test_given_full_greedy_scores_keep_what_pruning_ranks_itself(fraction):
    """The score stage's greedy scores (the whole order, keep=None) keep, at any target, the
    neurons the target-sized greedy run keeps: the orders share their first removals."""
    model = tiny("llama")
    inputs = example_inputs("llama", batch=8, length=16)
    stats = collect_ffn_statistics(model, [inputs])
    scores = {b.name: ffn_scores(model, b, stats[b.name], "greedy") for b in find_ffn_blocks(model)}
    itself = prune_transformer(model, None, statistics=stats, fraction=fraction, score="greedy").model
    given = prune_transformer(model, None, statistics=stats, fraction=fraction, score="greedy", scores=scores).model
    for key, value in itself.state_dict().items():
        assert torch.equal(given.state_dict()[key], value), key
    with pytest.raises(InputError, match="have shape None"):
        prune_transformer(model, None, statistics=stats, fraction=fraction, scores={})


@pytest.mark.parametrize("family", FAMILIES)
def test_removal_equals_zeroing_the_neurons(family):
    model = tiny(family)
    inputs = example_inputs(family)
    stats = collect_ffn_statistics(model, [inputs], product_dtype=torch.float64)  # exact: formulas checked
    result = prune_transformer(model, None, statistics=stats, fraction=0.5, compensation="none", score="energy")
    zeroed = copy.deepcopy(model)
    modules = dict(zeroed.named_modules())
    with torch.no_grad():
        for block in find_ffn_blocks(zeroed):
            kept = kept_neurons(ffn_scores(zeroed, block, stats[block.name], "energy"), block.width // 2)
            dropped = torch.ones(block.width, dtype=torch.bool)
            dropped[kept] = False
            for name in block.producer_names:
                neuron_rows(modules[name])[dropped] = 0
                if modules[name].bias is not None:
                    modules[name].bias[dropped] = 0
    assert all(w == 16 if family != "gpt2" else w == 32 for w in result.report["widths"])
    torch.testing.assert_close(outputs(result.model, inputs), outputs(zeroed, inputs), rtol=1e-5, atol=1e-5)
    assert count_parameters(result.model) < count_parameters(model)
    assert outputs(model, inputs).shape == outputs(result.model, inputs).shape


def test_input_model_is_untouched_and_config_width_updated():
    model = tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_transformer(model, example_inputs("llama")["input_ids"], fraction=0.25)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.config.intermediate_size == 32 and result.model.config.intermediate_size == 24
    gpt = prune_transformer(tiny("gpt2"), example_inputs("gpt2")["input_ids"], fraction=0.25)
    assert gpt.model.config.n_inner == 48


@pytest.mark.parametrize("target", (0.9, 0.75))
def test_target_params_is_reached_as_closely_as_a_uniform_width_allows(target):
    model = tiny("llama")
    calibration = example_inputs("llama")["input_ids"]
    result = prune_transformer(model, calibration, target_params=target)
    ratio = result.report["params_ratio"]
    assert ratio <= target
    # one more neuron in every layer would overshoot the target
    per_neuron = (count_parameters(model) - count_parameters(result.model)) / (2 * (32 - result.report["widths"][0]))
    assert (count_parameters(result.model) + 2 * per_neuron) / count_parameters(model) > target
    assert result.report["params_ratio"] == count_parameters(result.model) / count_parameters(model)


def test_target_flops_counts_per_token_at_the_stated_length():
    model = tiny("llama")
    result = prune_transformer(model, example_inputs("llama")["input_ids"], target_flops=0.8, seq_len=8)
    assert result.report["flops_ratio"] <= 0.8
    assert result.report["flops_ratio"] == flops_per_token(result.model, 8) / flops_per_token(model, 8)
    # the attention term grows with the length: the same width is a smaller cut at 1024 tokens
    assert flops_per_token(result.model, 1024) / flops_per_token(model, 1024) > result.report["flops_ratio"]
    with pytest.raises(InputError, match="out of reach"):
        prune_transformer(model, example_inputs("llama")["input_ids"], target_params=0.1)
    with pytest.raises(InputError, match="exactly one"):
        prune_transformer(model, example_inputs("llama")["input_ids"], fraction=0.1, target_params=0.9)


def test_flap_bias_keeps_the_mean_output_and_a_loadable_llama_config():
    model = tiny("llama")
    inputs = example_inputs("llama", batch=6, length=12)
    result = prune_transformer(model, [inputs], fraction=0.5, score="fluctuation", compensation="bias")
    assert result.model.config.mlp_bias is True
    mlp = result.model.model.layers[0].mlp
    assert all(layer.bias is not None for layer in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))

    def first_down_output(m):
        got = {}
        handle = m.model.layers[0].mlp.down_proj.register_forward_hook(lambda _m, _a, out: got.setdefault("y", out))
        outputs(m, inputs)
        handle.remove()
        return got["y"].reshape(-1, 16).double()

    # the first layer sees the same inputs dense and pruned: its mean output is kept exactly
    torch.testing.assert_close(first_down_output(result.model).mean(0), first_down_output(model).mean(0))
    with pytest.raises(InputError, match="no config switch"):
        prune_transformer(tiny("qwen2"), [example_inputs("qwen2")], fraction=0.5, compensation="bias")


def test_sequential_refit_changes_only_the_layers_above_the_first():
    model = tiny("llama")
    inputs = example_inputs("llama", batch=6, length=12)
    one_shot = prune_transformer(model, [inputs], fraction=0.5)
    sequential = prune_transformer(model, [inputs], fraction=0.5, sequential=True)
    first, last = "model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"
    a, b = one_shot.model.state_dict(), sequential.model.state_dict()
    assert torch.equal(a[first], b[first])
    assert not torch.allclose(a[last], b[last])
    assert sequential.report["sequential"] is True


def test_refit_reconstructs_better_than_no_compensation():
    model = tiny("llama")
    inputs = example_inputs("llama", batch=8, length=16)
    dense = outputs(model, inputs)
    errors = {}
    for compensation in ("none", "ls"):
        pruned = prune_transformer(model, [inputs], fraction=0.5, compensation=compensation).model
        errors[compensation] = (outputs(pruned, inputs) - dense).pow(2).mean().item()
    assert errors["ls"] < errors["none"]


def test_bad_requests_are_one_line_input_errors():
    model = tiny("llama")
    ids = example_inputs("llama")["input_ids"]
    with pytest.raises(InputError, match="unknown FFN compensation"):
        prune_transformer(model, ids, fraction=0.5, compensation="magic")
    with pytest.raises(InputError, match="needs calibration"):
        prune_transformer(model, None, fraction=0.5)
    with pytest.raises(InputError, match="no FFN"):
        find_ffn_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))
