"""Datasets as in-memory tensors: scikit-learn's digits (default), CIFAR-10 and
Fashion-MNIST from local folders, and folders of saved samples (synthetic or real).

Every loader returns `ArrayDataset`s with images `(N, C, H, W)` float32, already
normalised, and labels `(N,)` int64. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from modhifi_core.checks import check_fraction
from modhifi_core.errors import InputError

DATASETS = ("digits", "cifar10", "fashion-mnist")


@dataclass(frozen=True)
class ArrayDataset:
    """Images `(N, C, H, W)` float32 (normalised) and labels `(N,)` int64."""

    images: Tensor
    labels: Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise InputError(f"images must have shape (N, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise InputError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: Tensor) -> ArrayDataset:
        return ArrayDataset(self.images[indices], self.labels[indices], self.num_classes)

    def of_classes(self, classes: list[int]) -> ArrayDataset:
        """The samples whose label is in `classes` (order preserved)."""
        keep = torch.isin(self.labels, torch.tensor(classes, dtype=self.labels.dtype))
        return self.subset(torch.nonzero(keep).flatten())

    def loader(self, batch_size: int = 256, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """Batches of `(images, labels)`; a seeded generator makes shuffling reproducible."""
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(
            TensorDataset(self.images, self.labels),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
        )


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's fixed train/test split."""

    name: str
    train: ArrayDataset
    test: ArrayDataset

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape


def load_dataset(
    name: str = "digits",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    data_dir: str | Path | None = None,
    train_per_class: int | None = None,
) -> DatasetSplits:
    """Load a dataset by name, resized to `image_size` px and replicated to `channels`.

    `train_per_class`: keep only that many training images of each class (a seeded,
    stratified subset, `seed`; the test split stays whole) — the CPU budget of a 60k-image
    dataset. The normalisation statistics are those of the kept images.

    `digits`: scikit-learn's bundled 8x8 digits, stratified train/test split seeded by
    `seed`. `cifar10`: the python-pickle layout in `data_dir` (its own train/test split).
    `fashion-mnist`: the four idx files in `data_dir` (default: Debian's
    `dataset-fashion-mnist` folder, `FASHION_MNIST_DIR`), 60k/10k, 1x28x28.
    """
    if name == "digits":
        images, labels = _digits_arrays()
        train, test = _stratified_split(images, labels, test_fraction, seed)
        num_classes = 10
    elif name == "cifar10":
        if data_dir is None:
            raise InputError("dataset 'cifar10' needs --data-dir pointing at cifar-10-batches-py")
        train, test = read_cifar10(data_dir)
        num_classes = 10
    elif name == "fashion-mnist":
        train, test = read_fashion_mnist(data_dir if data_dir is not None else FASHION_MNIST_DIR)
        num_classes = 10
    else:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if train_per_class is not None:
        train = stratified_subset(*train, train_per_class, seed)
    mean, std = train[0].mean(), train[0].std()
    splits = []
    for x, y in (train, test):
        x = (x - mean) / std
        x = _resize(x, image_size)
        x = _replicate_channels(x, channels)
        splits.append(ArrayDataset(x.contiguous(), y, num_classes))
    return DatasetSplits(name, splits[0], splits[1])


def stratified_subset(images: Tensor, labels: Tensor, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """`per_class` images of every class (all of a class that has fewer), drawn by a
    permutation seeded with `seed`, in their original order."""
    if per_class < 1:
        raise InputError(f"train_per_class must be at least 1, got {per_class}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    chosen = torch.cat([order[labels[order] == c][:per_class] for c in labels.unique()])
    chosen = chosen.sort().values
    return images[chosen], labels[chosen]


def _digits_arrays() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    return images, labels


def _stratified_split(
    images: Tensor, labels: Tensor, test_fraction: float, seed: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    from sklearn.model_selection import train_test_split

    check_fraction("test_fraction", test_fraction)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(index, test_size=test_fraction, stratify=labels.numpy(), random_state=seed)
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


def _resize(images: Tensor, size: int | None) -> Tensor:
    if size is None or size == images.shape[-1]:
        return images
    if size < 4:
        raise InputError(f"image_size must be at least 4 px, got {size}")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def _replicate_channels(images: Tensor, channels: int | None) -> Tensor:
    if channels is None or channels == images.shape[1]:
        return images
    if images.shape[1] != 1:
        raise InputError(f"cannot turn {images.shape[1]}-channel images into {channels} channels")
    return images.expand(-1, channels, -1, -1)


# --- CIFAR-10, python-pickle layout ------------------------------------------------------

_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = "test_batch"


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; anything else is refused.

    The CIFAR-10 batches are pickles; a plain `pickle.load` would run whatever code a
    tampered file names.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[Tensor, Tensor]:
    try:
        with open(path, "rb") as handle:
            batch = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except FileNotFoundError:
        raise InputError(f"CIFAR-10 batch not found: {path}") from None
    except Exception as exc:  # corrupt, truncated, tampered, wrong keys
        raise InputError(f"not a CIFAR-10 batch: {path} ({exc})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise InputError(f"not a CIFAR-10 batch: {path} (data shape {data.shape})")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return images, torch.from_numpy(labels)


def read_cifar10(data_dir: str | Path) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Read CIFAR-10 from `data_dir` (the folder holding data_batch_1..5 and test_batch,
    or its parent). Missing training batches are skipped if at least one is present."""
    root = Path(data_dir)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise InputError(f"CIFAR-10 folder not found: {root}")
    train_files = [root / f for f in _CIFAR_TRAIN if (root / f).exists()]
    if not train_files:
        raise InputError(f"no CIFAR-10 training batches (data_batch_N) in {root}")
    parts = [_read_cifar_batch(f) for f in train_files]
    train = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    test = _read_cifar_batch(root / _CIFAR_TEST)
    return train, test


# --- Fashion-MNIST, idx layout (Debian's dataset-fashion-mnist) ---------------------------

# Where `apt-get install dataset-fashion-mnist` puts the files (`dpkg -L dataset-fashion-mnist`).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# idx magic: two zero bytes, the element type (0x08 = unsigned byte), the number of dims.
_IDX_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """The uint8 array of one idx file (gzipped when its name ends in .gz).

    Layout (LeCun's MNIST format): magic `00 00 08 D`, then D big-endian uint32 sizes,
    then the prod(sizes) bytes. Anything else — another element type, a short or long
    payload, a truncated gzip — is refused with InputError."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise InputError(f"idx file not found: {path}") from None
    except (OSError, EOFError) as exc:  # bad gzip header, truncated stream
        raise InputError(f"unreadable idx file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise InputError(f"not an idx file: {path} (bad magic number)")
    if raw[2] != _IDX_UBYTE:
        raise InputError(f"{path}: idx element type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise InputError(f"{path}: idx header truncated ({ndim} dims)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise InputError(f"{path}: idx dims {dims} need {expected} bytes of data, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_fashion_mnist(data_dir: str | Path) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Train and test `(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64)` from
    the idx files in `data_dir` (each name with or without `.gz`)."""
    root = Path(data_dir)
    if not root.is_dir():
        hint = " (apt-get install dataset-fashion-mnist)" if root == FASHION_MNIST_DIR else ""
        raise InputError(f"Fashion-MNIST folder not found: {root}{hint}")
    return tuple(_read_idx_pair(root, *_IDX_FILES[part]) for part in ("train", "test"))  # type: ignore[return-value]


def _read_idx_pair(root: Path, images_name: str, labels_name: str) -> tuple[Tensor, Tensor]:
    images = read_idx(_idx_path(root, images_name))
    labels = read_idx(_idx_path(root, labels_name))
    if images.ndim != 3 or labels.ndim != 1:
        raise InputError(f"{root}: expected images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise InputError(f"{root}: {len(images)} images in {images_name} but {len(labels)} labels in {labels_name}")
    if labels.size and labels.max() > 9:
        raise InputError(f"{root}: {labels_name} holds label {int(labels.max())}; Fashion-MNIST labels are 0..9")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def _idx_path(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.exists():
            return candidate
    raise InputError(f"Fashion-MNIST file {name}(.gz) not found in {root}")


# --- folders of saved samples -------------------------------------------------------------


def load_sample_folder(folder: str | Path, num_classes: int | None = None) -> ArrayDataset:
    """Samples saved as `.npz` (arrays `images`, optional `labels`) or `.pt` (a dict of
    tensors, loaded with weights_only=True) files in `folder`, concatenated in name order.

    Unlabelled samples get label -1. Labels outside `[0, num_classes)` are refused.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"sample folder not found: {root}")
    files = sorted(p for p in root.iterdir() if p.suffix in (".npz", ".pt"))
    if not files:
        raise InputError(f"sample folder {root} holds no .npz or .pt files")
    images, labels = [], []
    for path in files:
        x, y = _read_sample_file(path)
        images.append(x)
        labels.append(y)
    x, y = torch.cat(images), torch.cat(labels)
    inferred = int(y.max()) + 1 if (y >= 0).any() else 0
    num_classes = num_classes if num_classes is not None else inferred
    labelled = y[y >= 0]
    if len(labelled) and (labelled.max() >= num_classes or y.min() < -1):
        raise InputError(f"labels in {root} must lie in [0, {num_classes}), found {int(y.min())}..{int(y.max())}")
    return ArrayDataset(x, y, num_classes)


def _read_sample_file(path: Path) -> tuple[Tensor, Tensor]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                x = torch.from_numpy(np.asarray(arrays["images"], dtype=np.float32))
                y = torch.from_numpy(np.asarray(arrays["labels"], dtype=np.int64)) if "labels" in arrays else None
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's advice on a refused pickle: the refusal below says it
                obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or "images" not in obj:
                raise ValueError("expected a dict with an 'images' tensor")
            x = torch.as_tensor(obj["images"], dtype=torch.float32)
            y = torch.as_tensor(obj["labels"], dtype=torch.int64) if "labels" in obj else None
    except Exception as exc:
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc) or "Unsupported global" in str(exc):
            # torch's own message advises turning the protection off; never repeat that advice
            raise InputError(f"refusing to load {path}: it contains objects that could run code when loaded") from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"unreadable sample file {path}: {reason}") from None
    if x.ndim != 4:
        raise InputError(f"{path}: images must have shape (N, C, H, W), got {tuple(x.shape)}")
    if y is None:
        y = torch.full((x.shape[0],), -1, dtype=torch.int64)
    if y.shape != (x.shape[0],):
        raise InputError(f"{path}: {x.shape[0]} images but labels of shape {tuple(y.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(f"{path}: images contain NaN or inf")
    return x, y


# --- the data a model was trained on, as recorded in its checkpoint --------------------


def data_spec(
    dataset: str = "digits",
    image_size: int | None = 8,
    channels: int | None = 1,
    seed: int = 0,
    test_fraction: float = 0.2,
    data_dir: str | None = None,
    train_per_class: int | None = None,
) -> dict:
    """The arguments of `load_dataset` as a plain dict (stored in checkpoint metadata;
    `train_per_class` only when set, so records written before it read the same)."""
    spec = {
        "dataset": dataset,
        "image_size": image_size,
        "channels": channels,
        "seed": seed,
        "test_fraction": test_fraction,
        "data_dir": data_dir,
    }
    if train_per_class is not None:
        spec["train_per_class"] = train_per_class
    return spec


def load_from_spec(spec: dict, **overrides) -> DatasetSplits:
    """`load_dataset` with the arguments of `spec`, any of them overridden (None = keep)."""
    args = {**spec, **{k: v for k, v in overrides.items() if v is not None}}
    name = args.pop("dataset")
    return load_dataset(name, **args)
