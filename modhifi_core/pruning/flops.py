"""FLOPs and parameter counts (`torch.utils.flop_counter`), per layer and in total.

FLOPs are per input image, counted by `FlopCounterMode` (2 per multiply-add, conv and
matmul ops only). A conv/linear layer's FLOPs are proportional to its input channels
times its output channels, which is what `predicted_flops` uses to price a pruning plan
before any surgery.

Attention is counted too: the counting forward runs under `unfused_attention`. Without
it, under `no_grad` `nn.MultiheadAttention` takes its fused fast path and CPU
scaled-dot-product attention (HF `sdpa`, timm's fused attention) a flash kernel, and
`FlopCounterMode` counts neither, so attention (for the fast path, the whole layer)
cost nothing and a FLOPs target was aimed at the wrong total (issue 27).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


@contextmanager
def unfused_attention() -> Iterator[None]:
    """Attention as plain matmuls, which `FlopCounterMode` counts: `nn.MultiheadAttention`
    and `nn.TransformerEncoderLayer` without their fused fast path, scaled-dot-product
    attention on its math backend (`QKᵀ` and `AV` as `bmm`). Same results up to rounding;
    the previous fast-path setting is restored on exit."""
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)


@torch.no_grad()
def flops_by_layer(model: nn.Module, example: Tensor) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one forward pass on one image shaped like `example[0]` (attention
    included, fused or not: `unfused_attention`), and the FLOPs of each named leaf module
    that runs a conv/matmul itself."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with unfused_attention(), counter:
        model(example[:1])
    model.train(was_training)
    names = {name for name, _ in model.named_modules()}
    per_layer = {}
    for key, ops in counter.get_flop_counts().items():
        name = key.split(".", 1)[1] if "." in key else ""
        if name in names and name and not any(True for _ in model.get_submodule(name).children()):
            per_layer[name] = int(sum(ops.values()))
    return int(counter.get_total_flops()), per_layer


def count_flops(model: nn.Module, example: Tensor) -> int:
    """FLOPs of one forward pass on one image shaped like `example[0]`."""
    return flops_by_layer(model, example)[0]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def predicted_flops(
    total: int,
    per_layer: dict[str, int],
    channels: dict[str, tuple[int, int]],
    kept_in: dict[str, int],
    kept_out: dict[str, int],
) -> float:
    """Total FLOPs after keeping `kept_in[name]` input and `kept_out[name]` output channels
    of the layers with `channels[name] = (c_in, c_out)` (missing names: unchanged)."""
    removed = 0.0
    for name, flops in per_layer.items():
        if name not in channels:
            continue
        c_in, c_out = channels[name]
        keep = (kept_in.get(name, c_in) / c_in) * (kept_out.get(name, c_out) / c_out)
        removed += flops * (1.0 - keep)
    return total - removed
