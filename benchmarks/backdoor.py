"""The backdoor-cleansing scenario of Unlearn-Sparse (method.md §5).

BadNets-style poisoning: a square trigger patch — pixels `[-(size+offset):-offset]` of
both image axes, `[-6:-2, -6:-2]` by default — is stamped on a seeded `fraction` (10%)
of the training images of the non-target classes, which are relabelled to the target
class. A model trained on that set learns "trigger → target". Cleansing is unlearning
with the poisoned samples as the forget set (`backdoor_split`); success is measured as
the attack success rate (ASR: triggered test images of the other classes classified as
the target) falling while clean test accuracy holds.

The patch value defaults to the darkest pixel of the images (raw value 0 in the
normalised space: black on CIFAR-10, background on digits).

A benchmark scenario, not part of the engine (no command or params section runs it):
`benchmarks/unlearn.py backdoor` imports it as `backdoor`, the tests as `benchmarks.backdoor`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.splits import ForgetSplit
from modhifi_core.training import accuracy, predict


@dataclass(frozen=True)
class Trigger:
    """A `size`×`size` patch ending `offset` pixels before the bottom-right corner, set to
    `value` (None: the darkest pixel of the images it is stamped on)."""

    size: int = 4
    offset: int = 2
    value: float | None = None

    def __post_init__(self) -> None:
        if self.size < 1 or self.offset < 0:
            raise InputError(f"trigger size must be >= 1 and offset >= 0, got {self.size} and {self.offset}")

    def stamp(self, images: Tensor, value: float | None = None) -> Tensor:
        """A copy of `images` `(N, C, H, W)` with the patch stamped on every image."""
        height, width = images.shape[-2:]
        if self.size + self.offset > min(height, width):
            raise InputError(f"a {self.size}px trigger {self.offset}px from the edge does not fit {height}x{width}")
        fill = value if value is not None else (self.value if self.value is not None else float(images.min()))
        stamped = images.clone()
        end_h, end_w = height - self.offset, width - self.offset
        stamped[..., end_h - self.size : end_h, end_w - self.size : end_w] = fill
        return stamped


@dataclass(frozen=True)
class PoisonedData:
    """The poisoned training set, which of its samples are poisoned, and the attack."""

    train: ArrayDataset
    poisoned_index: Tensor
    target: int
    trigger: Trigger
    fill: float
    fraction: float
    seed: int


def poison(
    dataset: ArrayDataset, fraction: float = 0.1, target: int = 0, trigger: Trigger = Trigger(), seed: int = 0
) -> PoisonedData:
    """Stamp the trigger on a seeded `fraction` of all samples, drawn from the non-target
    classes, and relabel them `target`."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"poisoned fraction must be in (0, 1), got {fraction}")
    if not 0 <= target < dataset.num_classes:
        raise InputError(f"target class {target} does not exist: classes are 0..{dataset.num_classes - 1}")
    candidates = torch.nonzero(dataset.labels != target).flatten()
    count = min(len(candidates), max(1, round(fraction * len(dataset))))
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))
    index = candidates[order[:count]].sort().values
    fill = trigger.value if trigger.value is not None else float(dataset.images.min())
    images, labels = dataset.images.clone(), dataset.labels.clone()
    images[index] = trigger.stamp(images[index], fill)
    labels[index] = target
    return PoisonedData(ArrayDataset(images, labels, dataset.num_classes), index, target, trigger, fill, fraction, seed)


def backdoor_split(poisoned: PoisonedData) -> ForgetSplit:
    """Forget = the poisoned samples (as poisoned), retain = the clean rest."""
    n = len(poisoned.train)
    is_forget = torch.zeros(n, dtype=torch.bool)
    is_forget[poisoned.poisoned_index] = True
    forget_index = torch.nonzero(is_forget).flatten()
    retain_index = torch.nonzero(~is_forget).flatten()
    return ForgetSplit(
        forget=poisoned.train.subset(forget_index),
        retain=poisoned.train.subset(retain_index),
        forget_index=forget_index,
        retain_index=retain_index,
        fraction=poisoned.fraction,
        seed=poisoned.seed,
    )


def attack_success_rate(model: nn.Module, test: ArrayDataset, poisoned: PoisonedData) -> float:
    """% of triggered test images of the non-target classes classified as the target."""
    others = test.labels != poisoned.target
    triggered = poisoned.trigger.stamp(test.images[others], poisoned.fill)
    return 100.0 * float((predict(model, triggered).argmax(1) == poisoned.target).float().mean())


def backdoor_metrics(model: nn.Module, test: ArrayDataset, poisoned: PoisonedData) -> dict[str, float]:
    """`{"clean_accuracy", "ASR"}` in percent."""
    return {"clean_accuracy": accuracy(model, test), "ASR": attack_success_rate(model, test, poisoned)}
