"""Calibration samples that are not optimised: gaussian noise (the baseline) and a
folder of user-supplied samples (synthetic or real, labelled or not)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from modhifi_core.data import ArrayDataset, load_sample_folder
from modhifi_core.errors import InputError
from modhifi_core.training import predict


def gaussian_samples(labels: Tensor, image_shape: tuple[int, int, int], seed: int = 0) -> Tensor:
    """Standard-normal images `(N, *image_shape)`, one per label: noise with the first two
    moments of normalised data and nothing else. Seeded."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(len(labels), *image_shape, generator=generator)


def folder_samples(
    model: nn.Module,
    folder: str | Path,
    image_shape: tuple[int, int, int],
    num_classes: int,
    classes: list[int],
    per_class: int | None,
) -> tuple[ArrayDataset, Tensor]:
    """The samples in `folder` (see `load_sample_folder`) of `classes`, at most
    `per_class` of each (None: all), in file order. Returns them and a bool mask `(N,)`
    of the ones that came unlabelled: those carry the model's prediction as label.

    A missing, empty or unreadable folder, images of another shape than the model's
    input, or labels outside the model's classes raise `InputError`.
    """
    samples = load_sample_folder(folder, num_classes=num_classes)
    if len(samples) == 0:
        raise InputError(f"sample folder {folder} holds no samples")
    if samples.image_shape != tuple(image_shape):
        raise InputError(f"samples in {folder} have shape {samples.image_shape}, the model takes {tuple(image_shape)}")
    unlabelled = samples.labels < 0
    labels = samples.labels.clone()
    if unlabelled.any():
        labels[unlabelled] = predict(model, samples.images[unlabelled]).argmax(1)
    keep = torch.zeros(len(labels), dtype=torch.bool)
    for k in classes:
        index = torch.nonzero(labels == k).flatten()
        keep[index if per_class is None else index[:per_class]] = True
    if not keep.any():
        raise InputError(f"sample folder {folder} holds no samples of classes {classes}")
    index = torch.nonzero(keep).flatten()
    return ArrayDataset(samples.images[index], labels[index], num_classes), unlabelled[index]
