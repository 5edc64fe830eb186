"""Forget/retain splits are deterministic, disjoint and cover the dataset."""

from __future__ import annotations

import pytest
import torch

from modhifi_core.errors import InputError
from modhifi_core.splits import class_split, random_split


def _covers(split, n):
    both = torch.cat([split.forget_index, split.retain_index])
    assert len(set(split.forget_index.tolist()) & set(split.retain_index.tolist())) == 0
    assert sorted(both.tolist()) == list(range(n))


def test_class_split(digits):
    split = class_split(digits.train, 3)
    _covers(split, len(digits.train))
    assert (split.forget.labels == 3).all() and (split.retain.labels != 3).all()
    assert split.kind == "class"


def test_random_split_is_seeded(digits):
    a = random_split(digits.train, 0.1, seed=7)
    b = random_split(digits.train, 0.1, seed=7)
    c = random_split(digits.train, 0.1, seed=8)
    _covers(a, len(digits.train))
    assert torch.equal(a.forget_index, b.forget_index)
    assert not torch.equal(a.forget_index, c.forget_index)
    assert len(a.forget) == round(0.1 * len(digits.train))


@pytest.mark.parametrize("k", [-1, 10, 99])
def test_missing_class_is_refused(digits, k):
    with pytest.raises(InputError, match="does not exist"):
        class_split(digits.train, k)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5])
def test_fraction_outside_open_interval(digits, fraction):
    with pytest.raises(InputError, match=f"forget_random must be a fraction strictly between 0 and 1, got {fraction}"):
        random_split(digits.train, fraction)


def test_split_without_retain_data_is_refused(digits):
    only_threes = digits.train.of_classes([3])
    with pytest.raises(InputError, match="no retain data"):
        class_split(only_threes, 3)
