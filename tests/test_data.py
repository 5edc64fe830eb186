"""Datasets: digits split, CIFAR-10 pickle reader (on a tiny file written here), sample folders."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from modhifi_core.data import load_dataset, load_sample_folder, read_cifar10
from modhifi_core.errors import InputError


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    assert digits.train.image_shape == (1, 8, 8)
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == 360
    again = load_dataset("digits")
    assert torch.equal(again.test.images, digits.test.images)
    # stratified: every class holds ~20% of its samples in the test set
    for k in range(10):
        n_test = int((digits.test.labels == k).sum())
        n_all = n_test + int((digits.train.labels == k).sum())
        assert abs(n_test / n_all - 0.2) < 0.02
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.test.images, digits.test.images)


def test_digits_normalised_with_train_statistics(digits):
    # mean 0 / std 1 on the training images, by construction (float32 rounding only)
    assert abs(float(digits.train.images.mean())) < 1e-5
    assert abs(float(digits.train.images.std()) - 1.0) < 1e-4


def test_digits_resized_and_replicated():
    data = load_dataset("digits", image_size=16, channels=3)
    assert data.train.image_shape == (3, 16, 16)
    assert torch.equal(data.train.images[:, 0], data.train.images[:, 2])


def test_unknown_dataset_names_the_choices():
    with pytest.raises(InputError, match="digits, cifar10"):
        load_dataset("mnist")


def _write_cifar(root, n_per_batch=6, batches=2):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, batches + 1)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, size=n_per_batch)),
        }
        with open(root / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def test_cifar10_reader_on_tiny_batches(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    (x_train, y_train), (x_test, y_test) = read_cifar10(tmp_path)
    assert x_train.shape == (12, 3, 32, 32) and x_test.shape == (6, 3, 32, 32)
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert data.train.image_shape == (3, 32, 32) and data.num_classes == 10


def test_cifar10_reader_refuses_code_in_pickle(tmp_path):
    root = tmp_path / "c"
    _write_cifar(root)
    canary = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    with open(root / "test_batch", "wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": [0]}, handle)
    with pytest.raises(InputError, match="not a CIFAR-10 batch"):
        read_cifar10(root)
    assert not canary.exists()


def test_cifar10_missing_folder():
    with pytest.raises(InputError, match="not found"):
        read_cifar10("/nonexistent/cifar")


def test_sample_folder_round_trip_npz_and_pt(tmp_path):
    images = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "a.npz", images=images, labels=np.array([0, 1, 2, 3]))
    torch.save({"images": torch.zeros(2, 1, 8, 8), "labels": torch.tensor([4, 5])}, tmp_path / "b.pt")
    data = load_sample_folder(tmp_path, num_classes=10)
    assert len(data) == 6
    assert data.labels.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(data.images[:4].numpy(), images)


def test_sample_folder_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_sample_folder(tmp_path / "missing")
    with pytest.raises(InputError, match="no .npz or .pt"):
        load_sample_folder(tmp_path)
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 1, 8, 8), np.float32), labels=np.array([0, 12]))
    with pytest.raises(InputError, match="labels"):
        load_sample_folder(tmp_path, num_classes=10)
    (tmp_path / "a.npz").write_bytes(b"garbage")
    with pytest.raises(InputError, match="unreadable"):
        load_sample_folder(tmp_path, num_classes=10)
