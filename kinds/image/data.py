"""The data an image classifier is measured and calibrated on, at its input shape: the
pipeline's `data.dataset` (`evaluation_data`), a command's `--data` (`load_image_data`)
and `--calibration` (`image_calibration`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.errors import InputError


def evaluation_data(params: Any, image_shape: tuple[int, int, int]) -> DatasetSplits:
    """`data.dataset` (from `data.data_dir` where it needs one) resized to the model's input."""
    from modhifi_core.data import load_dataset

    d = params.data
    channels, height, width = image_shape
    if height != width:
        raise InputError(f"the model takes {height}x{width} images; data.dataset is resized to square images only")
    data_dir = Path(d.data_dir) if d.data_dir else None
    return load_dataset(
        d.dataset,
        image_size=height,
        channels=channels,
        test_fraction=d.test_fraction,
        data_dir=data_dir,
        train_per_class=d.train_per_class,
    )


def load_image_data(data: str, image_shape: tuple[int, int, int], data_dir: Path | None = None) -> DatasetSplits:
    """`--data` of an image command: a dataset name (digits, fashion-mnist, cifar10; from
    `data_dir` where it needs one) resized to the model's input `image_shape`, or a folder
    of `.npz`/`.pt` samples with labels (then both the train and the test split)."""
    from modhifi_core.data import DATASETS, load_dataset, load_sample_folder

    channels, height, width = image_shape
    if data in DATASETS:
        if height != width:
            raise InputError(f"the model takes {height}x{width} images; datasets are resized to square images only")
        return load_dataset(data, image_size=height, channels=channels, data_dir=data_dir)
    folder = Path(data)
    if not folder.is_dir():
        raise InputError(f"--data {data}: neither a dataset ({', '.join(DATASETS)}) nor a folder of samples")
    samples = load_sample_folder(folder)
    if samples.image_shape != tuple(image_shape):
        raise InputError(f"--data {data}: samples of shape {samples.image_shape}, the model takes {tuple(image_shape)}")
    if bool((samples.labels < 0).any()):
        raise InputError(f"--data {data}: some samples have no label; accuracy needs labelled samples")
    return DatasetSplits(folder.name, samples, samples)


def image_calibration(
    source: str,
    network: nn.Module | None,
    image_shape: tuple[int, int, int],
    data: DatasetSplits | None,
    samples: int,
    seed: int,
) -> ArrayDataset:
    """`--calibration` of an image command: `synthetic` (made from `network`: data-free),
    `gaussian`, `real` (the training split of `--data`) or a folder of `.npz`/`.pt`
    samples; `samples` of them, seeded (`modhifi_core.calibration.calibration_set`)."""
    import torch

    from modhifi_core.calibration import SOURCES, calibration_set, seeded_subset
    from modhifi_core.data import load_sample_folder
    from modhifi_core.training import predict

    if source not in SOURCES:
        if not Path(source).is_dir():
            raise InputError(f"--calibration must be {', '.join(SOURCES)} or a folder of samples, got {source!r}")
        pool = load_sample_folder(source)
        if pool.image_shape != tuple(image_shape):
            raise InputError(
                f"--calibration {source}: samples of shape {pool.image_shape}, the model takes {tuple(image_shape)}"
            )
        return seeded_subset(pool, samples, seed)
    if data is None:
        if source == "real":
            raise InputError("--calibration real needs --data (the dataset whose training images calibrate)")
        classes = int(predict(network, torch.zeros(1, *image_shape)).shape[1])
        empty = ArrayDataset(torch.zeros(0, *image_shape), torch.zeros(0, dtype=torch.int64), classes)
        data = DatasetSplits("none", empty, empty)
    return calibration_set(source, network, data, samples, seed)
