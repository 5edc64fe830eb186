"""Forget/retain splits: the one type every unlearning method takes.

Class-wise forgetting puts all samples of one class in the forget set; random
forgetting puts a seeded fraction of the samples there. Both are deterministic and
the two sides are disjoint and cover the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modhifi_core.checks import check_class_exists, check_fraction
from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError


@dataclass(frozen=True)
class ForgetSplit:
    """Forget set D_f and retain set D_r of one training set.

    `forget_class` is set for class-wise forgetting, `fraction` for random forgetting.
    `forget_index`/`retain_index` index the original dataset.
    """

    forget: ArrayDataset
    retain: ArrayDataset
    forget_index: torch.Tensor
    retain_index: torch.Tensor
    forget_class: int | None = None
    fraction: float | None = None
    seed: int = 0

    @property
    def kind(self) -> str:
        return "class" if self.forget_class is not None else "random"

    def describe(self) -> str:
        if self.forget_class is not None:
            return f"class {self.forget_class} ({len(self.forget)} forget / {len(self.retain)} retain)"
        return f"random {self.fraction:.0%} seed {self.seed} ({len(self.forget)} forget / {len(self.retain)} retain)"


def class_split(dataset: ArrayDataset, forget_class: int) -> ForgetSplit:
    """All samples of `forget_class` to forget, the rest to retain."""
    check_class_exists(forget_class, dataset.num_classes, "forget class")
    is_forget = dataset.labels == forget_class
    return _split(dataset, is_forget, forget_class=forget_class)


def random_split(dataset: ArrayDataset, fraction: float, seed: int = 0) -> ForgetSplit:
    """A seeded random `fraction` of the samples to forget, the rest to retain."""
    check_fraction("forget_random", fraction)
    n = len(dataset)
    n_forget = max(1, round(fraction * n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    is_forget = torch.zeros(n, dtype=torch.bool)
    is_forget[order[:n_forget]] = True
    return _split(dataset, is_forget, fraction=fraction, seed=seed)


def forget_split(train: ArrayDataset, forgotten: dict) -> ForgetSplit:
    """The real forget/retain split a `forgotten` record (metadata) names:
    `{"class": k}` or `{"fraction": f, "seed": s}`."""
    if forgotten.get("class") is not None:
        return class_split(train, forgotten["class"])
    if forgotten.get("fraction") is not None:
        return random_split(train, forgotten["fraction"], forgotten.get("seed", 0))
    raise InputError(f"the record {forgotten!r} names no class and no fraction to forget")


def _split(dataset: ArrayDataset, is_forget: torch.Tensor, **info) -> ForgetSplit:
    forget_index = torch.nonzero(is_forget).flatten()
    retain_index = torch.nonzero(~is_forget).flatten()
    if len(forget_index) == 0:
        raise InputError("the split leaves nothing to forget")
    if len(retain_index) == 0:
        raise InputError("the split leaves no retain data")
    return ForgetSplit(
        forget=dataset.subset(forget_index),
        retain=dataset.subset(retain_index),
        forget_index=forget_index,
        retain_index=retain_index,
        **info,
    )
