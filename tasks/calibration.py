"""The calibration data a stage feeds the engine: synthetic (data-free), real or gaussian."""

from __future__ import annotations

import torch

from modhifi_core.data import ArrayDataset, load_from_spec, load_sample_folder
from modhifi_core.errors import InputError
from tasks.workspace import Workspace


def calibration_set(ws: Workspace, source: str, spec: dict, num_classes: int, seed: int) -> ArrayDataset:
    """Labelled calibration samples: the synthesize stage's output, the training images,
    or standard-normal noise of the training images' shape (labels -1)."""
    if source == "synthetic":
        folder = ws.artifact("synthetic")
        if not folder.is_dir():
            raise InputError(f"no synthetic data at {folder}: run the synthesize stage first")
        return load_sample_folder(folder, num_classes=num_classes)
    data = load_from_spec(spec)
    if source == "real":
        return data.train
    if source == "gaussian":
        generator = torch.Generator().manual_seed(seed)
        images = torch.randn((len(data.train), *data.image_shape), generator=generator)
        return ArrayDataset(images, torch.full((len(images),), -1, dtype=torch.int64), num_classes)
    raise InputError(f"unknown calibration source {source!r}; choose synthetic, real or gaussian")
