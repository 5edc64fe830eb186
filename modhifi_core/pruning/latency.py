"""CPU latency of a forward pass: warm-up, then the median of repeated timings.

With one torch thread (the pipeline's stages and the tests) a pass is timed in the CPU time
of this process (`time.process_time`), not wall-clock: on a shared machine wall-clock also
counts the slices the OS gives to other processes, and two measurements of one model then
differed by up to 77% (20 repeats, 2 cores, load 3). The CPU time of one thread is the
latency of an unloaded core. With more threads CPU time would add the threads up, so
wall-clock is used. Measured spread of the dense/pruned speed-up between two measurements
(resnet18 width 16, 100 interleaved repeats, load 5 on 2 cores): at most 3.6% over 5 pairs.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from modhifi_core.errors import InputError


def _clock() -> float:
    """Seconds: this process's CPU time with one torch thread, else wall-clock."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


MEMORY_FORMATS = ("contiguous", "channels_last")


@torch.inference_mode()
def compare_latency(
    dense: nn.Module,
    pruned: nn.Module,
    image_shape: tuple[int, ...],
    batch_size: int = 64,
    warmup: int = 3,
    repeats: int = 10,
    memory_format: str = "contiguous",
) -> tuple[float, float]:
    """Median seconds `(dense, pruned)` on the same random batch `(batch_size, *image_shape)`.

    `memory_format="channels_last"` times copies of both models and an input batch in NHWC
    (4-D inputs only): the layout PyTorch's CPU convolutions run without reordering every
    conv's input, as a CNN is deployed for CPU inference; the models passed stay as they are."""
    if memory_format not in MEMORY_FORMATS:
        raise InputError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
    inputs = torch.randn(batch_size, *image_shape, generator=torch.Generator().manual_seed(0))
    if memory_format == "channels_last":
        if inputs.dim() != 4:
            raise InputError(f"channels_last needs (C, H, W) images, got image shape {tuple(image_shape)}")
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        dense, pruned = (copy.deepcopy(m).to(memory_format=torch.channels_last) for m in (dense, pruned))
    return time_alternately(dense, pruned, lambda m: m(inputs.to(next(m.parameters()).device)), warmup, repeats)


@torch.inference_mode()
def time_alternately(
    dense: nn.Module, pruned: nn.Module, forward: Callable[[nn.Module], object], warmup: int = 3, repeats: int = 10
) -> tuple[float, float]:
    """Median seconds `(dense, pruned)` of `forward(model)` (the models in eval mode), after
    `warmup` untimed passes, timed alternately so that load from other processes affects
    both alike. Any model kind: `forward` feeds it its inputs (images, token ids)."""
    models = (dense, pruned)
    states = [m.training for m in models]
    for m in models:
        m.eval()
    for _ in range(warmup):
        for m in models:
            forward(m)
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for m, record in zip(models, timings):
            start = _clock()
            forward(m)
            record.append(_clock() - start)
    for m, state in zip(models, states):
        m.train(state)
    return statistics.median(timings[0]), statistics.median(timings[1])
