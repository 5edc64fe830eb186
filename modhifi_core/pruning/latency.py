"""CPU latency of a forward pass: warm-up, then the median of repeated timings."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.inference_mode()
def measure_latency(
    model: nn.Module, image_shape: tuple[int, ...], batch_size: int = 64, warmup: int = 3, repeats: int = 10
) -> float:
    """Median wall-clock seconds of `model` (eval mode) on a random batch
    `(batch_size, *image_shape)`, after `warmup` untimed passes."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = torch.randn(batch_size, *image_shape, generator=torch.Generator().manual_seed(0)).to(device)
    for _ in range(warmup):
        model(inputs)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(inputs)
        timings.append(time.perf_counter() - start)
    model.train(was_training)
    return statistics.median(timings)


@torch.inference_mode()
def compare_latency(
    dense: nn.Module,
    pruned: nn.Module,
    image_shape: tuple[int, ...],
    batch_size: int = 64,
    warmup: int = 3,
    repeats: int = 10,
) -> tuple[float, float]:
    """Median seconds `(dense, pruned)` on the same random batch, timed alternately so that
    load from other processes affects both alike."""
    inputs = torch.randn(batch_size, *image_shape, generator=torch.Generator().manual_seed(0))
    models = (dense, pruned)
    states = [m.training for m in models]
    for m in models:
        m.eval()
    for _ in range(warmup):
        for m in models:
            m(inputs.to(next(m.parameters()).device))
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for m, record in zip(models, timings):
            batch = inputs.to(next(m.parameters()).device)
            start = time.perf_counter()
            m(batch)
            record.append(time.perf_counter() - start)
    for m, state in zip(models, states):
        m.train(state)
    return statistics.median(timings[0]), statistics.median(timings[1])
