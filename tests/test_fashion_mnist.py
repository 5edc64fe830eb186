"""Fashion-MNIST reader: idx files written here byte by byte (magic, dims, payload),
gzipped or not, through `load_dataset` / `data_spec` / `load_from_spec`, and refusals of
corrupt files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
import yaml

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import FASHION_MNIST_DIR, data_spec, load_dataset, load_from_spec, read_idx
from modhifi_core.errors import InputError
from modhifi_core.metadata import read_metadata

NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """LeCun's idx layout: 00 00 <type> <ndim>, big-endian uint32 dims, raw bytes."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    data = idx_bytes(array)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def tiny_fashion(folder, n_train: int = 20, n_test: int = 10, compress: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / NAMES[part][0], images, compress)
        write_idx(folder / NAMES[part][1], labels, compress)
        arrays[part] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_reads_the_idx_layout_gzipped_or_plain(tmp_path, compress):
    arrays = tiny_fashion(tmp_path, compress=compress)
    data = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert data.train.image_shape == (1, 28, 28) and len(data.train) == 20 and len(data.test) == 10
    assert data.num_classes == 10
    assert torch.equal(data.train.labels, torch.from_numpy(arrays["train"][1].astype(np.int64)))
    # pixels: x/255, then normalised with the *training* mean and std (applied to test too)
    raw_train = torch.from_numpy(arrays["train"][0].astype(np.float32) / 255.0)
    mean, std = raw_train.mean(), raw_train.std()
    raw_test = torch.from_numpy(arrays["test"][0].astype(np.float32) / 255.0)
    torch.testing.assert_close(data.test.images[:, 0], (raw_test - mean) / std)


def test_spec_round_trip_resizes_and_replicates(tmp_path):
    tiny_fashion(tmp_path)
    spec = data_spec("fashion-mnist", image_size=32, channels=3, data_dir=str(tmp_path))
    data = load_from_spec(spec)
    assert data.name == "fashion-mnist" and data.image_shape == (3, 32, 32)
    assert torch.equal(data.train.images[:, 0], data.train.images[:, 2])


def test_train_per_class_keeps_a_seeded_stratified_subset(tmp_path):
    arrays = tiny_fashion(tmp_path, n_train=60, n_test=10)  # 6 images of each class
    full = load_dataset("fashion-mnist", data_dir=tmp_path)
    part = load_dataset("fashion-mnist", data_dir=tmp_path, train_per_class=2, seed=0)
    assert torch.equal(torch.bincount(part.train.labels), torch.full((10,), 2))
    assert len(part.test) == len(full.test)  # the test split stays whole
    # the kept images are training images, in their original order (matched by their
    # per-image z-scores, which the dataset-wide normalisation leaves unchanged)
    raw = torch.from_numpy(arrays["train"][0].astype(np.float32)).flatten(1)
    kept = part.train.images.flatten(1)
    zscore = lambda x: (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)  # noqa: E731
    index = torch.cdist(zscore(kept), zscore(raw)).argmin(1).tolist()
    assert index == sorted(index) and len(set(index)) == 20
    assert torch.equal(part.train.labels, torch.from_numpy(arrays["train"][1][index].astype(np.int64)))
    again = load_dataset("fashion-mnist", data_dir=tmp_path, train_per_class=2, seed=0)
    other = load_dataset("fashion-mnist", data_dir=tmp_path, train_per_class=2, seed=1)
    assert torch.equal(part.train.images, again.train.images)
    assert not torch.equal(part.train.images, other.train.images)
    # more per class than there are: every image of the class, like no subset
    everything = load_dataset("fashion-mnist", data_dir=tmp_path, train_per_class=100)
    assert torch.equal(everything.train.labels, full.train.labels)
    # recorded in the spec only when set, and read back from it
    spec = data_spec("fashion-mnist", data_dir=str(tmp_path), train_per_class=2)
    assert spec["train_per_class"] == 2 and "train_per_class" not in data_spec("fashion-mnist")
    assert torch.equal(load_from_spec(spec).train.labels, part.train.labels)
    with pytest.raises(InputError, match="train_per_class must be at least 1"):
        load_dataset("fashion-mnist", data_dir=tmp_path, train_per_class=0)


def test_read_idx_returns_the_array(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a"), array)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda good: b"\x01\x00" + good[2:], "bad magic"),
        (lambda good: good[:2] + b"\x0d" + good[3:], "not unsigned byte"),
        (lambda good: good[:-5], "need"),  # payload shorter than the dims say
        (lambda good: good + b"\x00", "need"),  # trailing bytes
        (lambda good: good[:6], "header truncated"),
        (lambda good: b"", "bad magic"),
    ],
)
def test_corrupt_idx_files_are_refused(tmp_path, corrupt, message):
    good = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    (tmp_path / "bad").write_bytes(corrupt(good))
    with pytest.raises(InputError, match=message):
        read_idx(tmp_path / "bad")


def test_truncated_gzip_is_refused(tmp_path):
    tiny_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="unreadable idx file"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_mismatched_counts_labels_and_missing_files_are_refused(tmp_path):
    tiny_fashion(tmp_path)
    write_idx(tmp_path / NAMES["train"][1], np.zeros(19, dtype=np.uint8))
    with pytest.raises(InputError, match="20 images .* but 19 labels"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    write_idx(tmp_path / NAMES["train"][1], np.full(20, 12, dtype=np.uint8))
    with pytest.raises(InputError, match="label 12"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    (tmp_path / f"{NAMES['test'][0]}.gz").unlink()
    write_idx(tmp_path / NAMES["train"][1], np.zeros(20, dtype=np.uint8))
    with pytest.raises(InputError, match="t10k-images-idx3-ubyte"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    with pytest.raises(InputError, match="folder not found"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "absent")


def test_images_with_wrong_rank_are_refused(tmp_path):
    tiny_fashion(tmp_path)
    write_idx(tmp_path / NAMES["train"][0], np.zeros((20, 784), dtype=np.uint8))
    with pytest.raises(InputError, match=r"expected images \(N, H, W\)"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


@pytest.mark.slow
def test_debian_fashion_mnist_when_installed():
    from modhifi_core.data import FASHION_MNIST_DIR

    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"{FASHION_MNIST_DIR} absent (apt-get install dataset-fashion-mnist)")
    data = load_dataset("fashion-mnist")
    assert (len(data.train), len(data.test)) == (60000, 10000)
    assert data.image_shape == (1, 28, 28)
    assert torch.equal(torch.bincount(data.train.labels), torch.full((10,), 6000))


def test_example_fashion_mnist_params_are_complete_and_valid():
    """examples/fashion-mnist/params.yaml names every section of the zoo's params.yaml and loads."""
    from pipeline_workspace import REPO

    from tasks.params import load_params

    example = REPO / "examples/fashion-mnist/params.yaml"
    assert set(yaml.safe_load(example.read_text())) == set(yaml.safe_load((REPO / "params.yaml").read_text()))
    params = load_params(example)
    assert params.data.dataset == "fashion-mnist" and params.data.train_per_class == 500


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_pipeline_end_to_end(tmp_path):
    """`modhifi run` on the example's params, shrunk (50 images per class, width 8, 1 epoch, a
    short inversion), on the real Fashion-MNIST files: every stage runs, the model is pruned
    to its FLOPs target and the class unlearned, evaluated on the 10k test images."""
    from pipeline_workspace import REPO, isolated_env, make_workspace, run_pipeline, write_params

    params = yaml.safe_load((REPO / "examples/fashion-mnist/params.yaml").read_text())
    params["data"]["train_per_class"] = 50
    params["model"]["width"] = 8
    params["train"]["epochs"] = 1
    params["synthesize"].update(per_class=10, steps=10)
    params["finetune"]["epochs"] = 1
    params["prune"].update(latency_batch=8, latency_repeats=3)
    params["evaluate"]["relearn_steps"] = 5
    root = make_workspace(tmp_path / "ws")
    write_params(root, params)
    summary = run_pipeline(root, isolated_env(tmp_path / "home"))
    assert sorted(summary["ran"]) == sorted(
        ["train_base", "synthesize", "collect", "score", "prune", "unlearn", "finetune", "evaluate", "report"]
    )
    m = summary["metrics"]
    assert m["flops_ratio"] == pytest.approx(0.25, abs=0.02) and m["forget_class"] == 3
    assert {"UA", "RA", "TA", "MIA", "UA_after_relearning", "pruned_test_accuracy"} <= set(m)
    base = load_checkpoint(root / "outputs/base/model.pt")
    spec = read_metadata(base.metadata).data
    assert spec["dataset"] == "fashion-mnist" and spec["train_per_class"] == 50
    data = load_from_spec(spec)
    assert len(data.train) == 500 and len(data.test) == 10_000
