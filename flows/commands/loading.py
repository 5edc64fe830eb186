"""What every command does first: refuse an output path it could not (or should not) write,
refuse work that cannot fit in memory, and — for commands that take `--model` — load the
checkpoint safely with the real data its metadata names (optionally another dataset or data
folder). All of it before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from modhifi_core.data import ArrayDataset, DatasetSplits
from modhifi_core.errors import InputError

_PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_output(path: Path, overwrite: bool = False, folder: bool = False) -> Path:
    """Refuse (`InputError`, one line naming `path`) an `--out` that this command must not
    or cannot write: an existing file (or, with `folder`, an existing non-empty folder)
    unless `overwrite`; a folder where a file is wanted (and vice versa); a path under a
    pseudo-filesystem (/proc, /sys, /dev); a parent that is a file or is not writable.

    Writability is probed by creating (and at once deleting) an unnamed temporary file in
    the nearest existing parent folder, not with `os.access`: root passes every permission
    check, yet cannot write into /proc or a read-only mount. Nothing is left on disk.
    """
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    for pseudo in _PSEUDO_FILESYSTEMS:
        if absolute == pseudo or pseudo in absolute.parents:
            raise InputError(f"--out {path}: cannot write under {pseudo} (not a place for files)")
    if folder:
        if path.exists() and not path.is_dir():
            raise InputError(f"--out {path} is a file; give a folder path")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise InputError(f"--out {path} already exists and is not empty; pass --overwrite to replace it")
    else:
        if path.is_dir():
            raise InputError(f"--out {path} is a folder; give a checkpoint file path")
        if path.exists() and not overwrite:
            raise InputError(f"--out {path} already exists; pass --overwrite to replace it")
    _check_writable(path, absolute)
    return path


def _check_writable(path: Path, absolute: Path) -> None:
    parent = absolute.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {path}: cannot create it, {parent} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise InputError(f"--out {path}: cannot write in {parent} ({exc.strerror or type(exc).__name__})") from None


def is_image_model(source: str) -> bool:
    """Whether `--model` names an open-weight image classifier: `torchvision:ARCH`,
    `timm:ARCH`, or an `hf:DIR` whose config is an image classifier (`model_kind`, which
    also refuses a missing or malformed folder in one line)."""
    from modhifi_core.sources.huggingface import model_kind
    from modhifi_core.vision.sources import is_image_source

    source = str(source)
    if source.startswith("hf:"):
        return model_kind(source) == "image-classification"
    return is_image_source(source)


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
    source: str, network: object, image_shape: tuple[int, int, int], data: DatasetSplits | None, samples: int, seed: int
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
                f"--calibration {source}: samples of shape {pool.image_shape}, the model takes {image_shape}"
            )
        return seeded_subset(pool, samples, seed)
    if data is None:
        if source == "real":
            raise InputError("--calibration real needs --data (the dataset whose training images calibrate)")
        classes = int(predict(network, torch.zeros(1, *image_shape)).shape[1])
        empty = ArrayDataset(torch.zeros(0, *image_shape), torch.zeros(0, dtype=torch.int64), classes)
        data = DatasetSplits("none", empty, empty)
    return calibration_set(source, network, data, samples, seed)
