"""Calibration data: what the scores, compensation and BN recalibration are computed on.

`calibration_batches` turns what a user has — an image tensor, a dataset, a list of
input batches or a DataLoader — into the list of input batches the engine iterates.
`calibration_set` makes the samples a pipeline or command asks for by name:
`synthetic` (made from the model itself: data-free), `real` (training images) or
`gaussian` (standard-normal noise, the baseline).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.errors import InputError

SOURCES = ("synthetic", "real", "gaussian")


def calibration_batches(calibration: object, batch_size: int = 128) -> list[Tensor]:
    """Input batches from `calibration`: a tensor `(N, ...)` or an `ArrayDataset` (split
    into batches of `batch_size`), a list/tuple of input tensors (each one batch), or any
    iterable of batches such as a DataLoader (a `(inputs, labels)` pair keeps its inputs).
    Refuses empty data and NaN/inf values."""
    if isinstance(calibration, ArrayDataset):
        calibration = calibration.images
    if isinstance(calibration, Tensor):
        batches = list(calibration.split(batch_size)) if calibration.ndim > 0 else []
    elif isinstance(calibration, Iterable):
        batches = [_inputs_of(item) for item in calibration]
    else:
        raise InputError(
            f"calibration must be a tensor, a dataset or batches of inputs, got {type(calibration).__name__}"
        )
    if not batches or sum(len(b) for b in batches) == 0:
        raise InputError("calibration data is empty: no inputs to collect statistics on")
    for batch in batches:
        if batch.is_floating_point() and not torch.isfinite(batch).all():
            raise InputError("calibration inputs contain NaN or inf")
    return batches


def _inputs_of(item: object) -> Tensor:
    if isinstance(item, (list, tuple)) and item and isinstance(item[0], Tensor):
        item = item[0]
    if not isinstance(item, Tensor):
        raise InputError(f"a calibration batch must be a tensor of inputs, got {type(item).__name__}")
    return item


def calibration_set(
    source: str,
    model: nn.Module,
    data: DatasetSplits,
    samples: int | None = 512,
    seed: int = 0,
    synthetic: ArrayDataset | None = None,
) -> ArrayDataset:
    """`samples` labelled calibration images (None: all there are): a seeded subset of
    `synthetic` (or, without it, samples synthesised from `model` now, class-balanced),
    of the real training images, or standard-normal noise (labels -1)."""
    if source not in SOURCES:
        raise InputError(f"unknown calibration source {source!r}; choose one of {', '.join(SOURCES)}")
    if samples is not None and samples < 1:
        raise InputError(f"calibration samples must be at least 1, got {samples}")
    if source == "gaussian":
        count = samples or len(data.train)
        images = torch.randn((count, *data.image_shape), generator=torch.Generator().manual_seed(seed))
        return ArrayDataset(images, torch.full((count,), -1, dtype=torch.int64), data.num_classes)
    if source == "real":
        pool = data.train
    elif synthetic is not None:
        pool = synthetic
    else:
        from modhifi_core.synthesis import synthesize

        count = {} if samples is None else {"per_class": -(-samples // data.num_classes)}  # else synthesize's
        pool = synthesize(model, image_shape=data.image_shape, seed=seed, **count).samples
    if pool.image_shape != data.image_shape:
        raise InputError(
            f"{source} calibration samples have shape {pool.image_shape}, the model takes {data.image_shape}"
        )
    return seeded_subset(pool, samples, seed)


def seeded_subset(pool: ArrayDataset, samples: int | None, seed: int) -> ArrayDataset:
    """`samples` of `pool` drawn by a permutation seeded with `seed`, in their original
    order; all of `pool` when `samples` is None or not smaller."""
    if samples is None or samples >= len(pool):
        return pool
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:samples]
    return pool.subset(order.sort().values)
