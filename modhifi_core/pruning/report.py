"""The pruning report: per-layer channels, FLOPs and parameters before/after, totals and
ratios, and measured CPU latency dense vs pruned. Plain JSON-able values only."""

from __future__ import annotations

from torch import Tensor, nn

from modhifi_core.pruning.flops import count_params, flops_by_layer
from modhifi_core.pruning.latency import compare_latency


def size_report(dense: nn.Module, pruned: nn.Module, example: Tensor) -> dict:
    """Totals (`flops_*` per image, `params_*`), their pruned/dense ratios, and `layers`:
    for every conv/linear, `[before, after]` of in/out channels, FLOPs and parameters."""
    dense_total, dense_layers = flops_by_layer(dense, example)
    pruned_total, pruned_layers = flops_by_layer(pruned, example)
    pruned_modules = dict(pruned.named_modules())
    layers = {}
    for name, module in dense.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        after = pruned_modules[name]
        layers[name] = {
            "in_channels": [module.weight.shape[1], after.weight.shape[1]],
            "out_channels": [module.weight.shape[0], after.weight.shape[0]],
            "flops": [dense_layers.get(name, 0), pruned_layers.get(name, 0)],
            "params": [count_params(module), count_params(after)],
        }
    dense_params, pruned_params = count_params(dense), count_params(pruned)
    return {
        "flops_dense": dense_total,
        "flops_pruned": pruned_total,
        "flops_ratio": pruned_total / dense_total,
        "params_dense": dense_params,
        "params_pruned": pruned_params,
        "params_ratio": pruned_params / dense_params,
        "layers": layers,
    }


def latency_report(
    dense: nn.Module,
    pruned: nn.Module,
    image_shape: tuple[int, ...],
    batch_size: int = 64,
    warmup: int = 3,
    repeats: int = 10,
    memory_format: str = "contiguous",
) -> dict:
    """Median CPU latency (ms per batch) of both models, timed alternately, and the
    speed-up `dense / pruned`; `memory_format` as `compare_latency` (reported when not
    the default)."""
    dense_s, pruned_s = compare_latency(dense, pruned, image_shape, batch_size, warmup, repeats, memory_format)
    return {
        "latency_dense_ms": 1000 * dense_s,
        "latency_pruned_ms": 1000 * pruned_s,
        "latency_speedup": dense_s / pruned_s,
        "latency_batch": batch_size,
        "latency_repeats": repeats,
    } | ({"latency_memory_format": memory_format} if memory_format != "contiguous" else {})
