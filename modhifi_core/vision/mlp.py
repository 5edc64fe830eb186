"""MLP-neuron pruning of Hugging Face ViT/DeiT/Swin image classifiers, written so that the
pruned config stays stock (method.md §3b: the MLP neurons are the components, attention
is a pass-through and keeps every channel).

    result = prune_hf_mlp(vit, images, target_flops=0.5)     # result.model: a ViT again

The neurons are removed by the FFN pruner (`modhifi_core.pruning.ffn.prune_transformer`)
on the `LogitsOnly` adapter. The widths it may choose are those a stock config can
describe: ViT/DeiT hold one `intermediate_size` for every block; Swin sizes each stage's
MLP as `int(mlp_ratio * dim)` with `dim = embed_dim * 2**stage`, so every stage keeps
the same fraction `k / base` of its neurons, `base` being the narrowest block's width.
The largest `k` meeting the target (FLOPs per image, or parameters) is found from the
per-layer FLOPs of the dense model; the pruned model is then checked against a fresh
build of its new config (`stock_shape_difference`), so `from_pretrained` rebuilds it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from modhifi_core.checks import check_one_target
from modhifi_core.errors import InputError
from modhifi_core.pruning.ffn import find_ffn_blocks, prune_transformer
from modhifi_core.pruning.flops import count_params, flops_by_layer
from modhifi_core.pruning.modhifi_p import PruningResult
from modhifi_core.vision.hf import LAYERNORM_TRANSFORMERS, LogitsOnly, model_type, stock_shape_difference


def prune_hf_mlp(
    model: nn.Module,
    calibration: Tensor,
    *,
    target_flops: float | None = None,
    target_params: float | None = None,
    score: str = "energy",
    compensation: str = "ls",
    round_to: int = 1,
    seed: int = 0,
    batch_size: int = 16,
) -> PruningResult:
    """Remove MLP neurons of an HF ViT/DeiT/Swin classifier (untouched; the result holds a
    new model) until at most `target_flops` of its FLOPs per image, or `target_params` of
    its parameters, remain (exactly one). `calibration`: images `(N, C, H, W)` as
    `pixel_values`. `score`/`compensation`: those of `prune_transformer`. `round_to`:
    the narrowest block keeps a multiple of it.

    Report: `kind` "mlp", `flops_*`/`params_*` and ratios (per image, every op counted),
    `widths` (kept neurons per block), `ffn_width_dense`, `kept_fraction`, `untouched`
    (attention), and the FFN pruner's `score`, `compensation`, timings."""
    keep, base = kept_mlp_width(model, tuple(calibration.shape[1:]), target_flops, target_params, round_to)
    wrapper = LogitsOnly(model).eval()
    example = calibration[:1]
    multiples = [b.width // base for b in find_ffn_blocks(wrapper)]
    result = prune_transformer(
        wrapper,
        calibration,
        fraction=1.0 - keep / base,
        score=score,
        compensation=compensation,
        seed=seed,
        batch_size=batch_size,
    )
    pruned = result.model.model.eval()
    if result.report["widths"] != [m * keep for m in multiples]:
        raise RuntimeError(f"the FFN pruner kept widths {result.report['widths']}, not {keep} per {base}")
    _write_width(pruned, model_type(model), keep)
    dense_flops, pruned_flops = (
        flops_by_layer(wrapper, example)[0],
        flops_by_layer(LogitsOnly(pruned).eval(), example)[0],
    )
    dense_params, pruned_params = count_params(model), count_params(pruned)
    report = {
        **{k: v for k, v in result.report.items() if k not in ("params_dense", "params_pruned", "params_ratio")},
        "kind": "mlp",
        "flops_dense": dense_flops,
        "flops_pruned": pruned_flops,
        "flops_ratio": pruned_flops / dense_flops,
        "params_dense": dense_params,
        "params_pruned": pruned_params,
        "params_ratio": pruned_params / dense_params,
        "kept_fraction": keep / base,
        "untouched": {"attention": "a pass-through (method.md §3b): q/k/v and output projections keep every channel"},
    }
    report.pop("seq_len", None)
    return PruningResult(pruned, report)


def kept_mlp_width(
    model: nn.Module,
    image_shape: tuple[int, ...],
    target_flops: float | None = None,
    target_params: float | None = None,
    round_to: int = 1,
) -> tuple[int, int]:
    """`(k, base)`: every block of `model` (an HF ViT/DeiT/Swin) keeps `k` of each `base`
    of its MLP neurons (`base` = the narrowest block's width) to reach the target, priced
    on one `image_shape` input. InputError for a model, target or widths that do not fit;
    no calibration needed, so commands check it before any work."""
    kind = model_type(model)
    if kind not in LAYERNORM_TRANSFORMERS:
        raise InputError(f"MLP-neuron pruning is for ViT/DeiT/Swin classifiers, not model type {kind!r}")
    check_one_target(target_flops=target_flops, target_params=target_params)
    target = target_flops if target_flops is not None else target_params
    wrapper = LogitsOnly(model).eval()
    blocks = find_ffn_blocks(wrapper)
    base = min(b.width for b in blocks)
    if any(b.width % base for b in blocks):
        raise InputError(f"the MLP widths {[b.width for b in blocks]} are not multiples of one width; no stock config")
    example = torch.zeros(1, *image_shape)
    return _kept_for_target(wrapper, blocks, base, example, target_flops is not None, target, round_to), base


def _kept_for_target(
    wrapper: nn.Module, blocks: list, base: int, example: Tensor, by_flops: bool, target: float, round_to: int
) -> int:
    """The largest `k` (a multiple of `round_to`, at least 1) such that keeping `k` of
    every `base` neurons leaves at most `target` of the dense FLOPs per image (or
    parameters). Each neuron's cost is its share of its fc1 + fc2 FLOPs (parameters)."""
    modules = dict(wrapper.named_modules())
    if by_flops:
        dense, per_layer = flops_by_layer(wrapper, example)
        cost = [sum(per_layer.get(name, 0) for name in (*b.producer_names, b.down_name)) / b.width for b in blocks]
    else:
        dense = count_params(wrapper)
        producers = [sum(count_params(modules[name]) for name in b.producer_names) for b in blocks]
        cost = [p / b.width + modules[b.down_name].weight.shape[0] for p, b in zip(producers, blocks)]
    step = max(1, round_to)
    candidates = [k for k in range(base, 0, -1) if k % step == 0] or [1]
    for k in candidates:
        remaining = dense - sum((b.width - b.width // base * k) * c for b, c in zip(blocks, cost))
        if remaining <= target * dense + 1e-9:
            return k
    floor = (dense - sum((b.width - b.width // base * candidates[-1]) * c for b, c in zip(blocks, cost))) / dense
    what = "FLOPs" if by_flops else "parameters"
    raise InputError(f"a {what} target of {target} is out of reach by MLP pruning alone (at most down to {floor:.3f})")


def _write_width(model: nn.Module, kind: str, keep: int) -> None:
    """Record the kept width in the config: ViT/DeiT `intermediate_size`, Swin `mlp_ratio`
    (the smallest float whose `int(mlp_ratio * dim)` gives every stage's width). Raises
    InputError if the config still does not describe the pruned shapes."""
    config = model.config
    if hasattr(config, "intermediate_size") and not hasattr(config, "mlp_ratio"):
        config.intermediate_size = keep
    else:
        ratio = keep / config.embed_dim
        dims = [config.embed_dim * 2**stage for stage in range(len(config.depths))]
        while any(int(ratio * dim) < keep * dim // config.embed_dim for dim in dims):
            ratio = math.nextafter(ratio, math.inf)  # k / embed_dim * dim may round just below k * 2**stage
        config.mlp_ratio = ratio
    difference = stock_shape_difference(model)
    if difference:
        name = next(iter(difference))
        raise InputError(f"the pruned {kind} model's config does not describe {name} {difference[name]}")
