"""The backdoor scenario's mechanics: trigger, poisoning, the forget split, ASR."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.backdoor import Trigger, attack_success_rate, backdoor_metrics, backdoor_split, poison
from modhifi_core.errors import InputError


class ConstantModel(nn.Module):
    """Always predicts `label`."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((len(x),), self.label), 10).float()


def test_trigger_is_the_spec_patch():
    images = torch.arange(2 * 32 * 32, dtype=torch.float32).view(2, 1, 32, 32)
    stamped = Trigger().stamp(images, value=-7.0)
    assert (stamped[..., 26:30, 26:30] == -7.0).all()  # pixels [-6:-2, -6:-2]
    untouched = torch.ones_like(images, dtype=torch.bool)
    untouched[..., 26:30, 26:30] = False
    assert torch.equal(stamped[untouched], images[untouched])
    assert (Trigger().stamp(images)[..., 26:30, 26:30] == 0.0).all()  # default: the darkest pixel
    with pytest.raises(InputError, match="does not fit 4x4"):
        Trigger().stamp(torch.zeros(1, 1, 4, 4))


def test_poison_relabels_a_fraction_of_non_target_samples(digits):
    poisoned = poison(digits.train, fraction=0.1, target=0, seed=0)
    index = poisoned.poisoned_index
    assert len(index) == round(0.1 * len(digits.train))
    assert (digits.train.labels[index] != 0).all() and (poisoned.train.labels[index] == 0).all()
    darkest = float(digits.train.images.min())
    assert (poisoned.train.images[index][..., 2:6, 2:6] == darkest).all()
    clean = torch.ones(len(digits.train), dtype=torch.bool)
    clean[index] = False
    assert torch.equal(poisoned.train.images[clean], digits.train.images[clean])
    assert torch.equal(poison(digits.train, 0.1, 0, seed=0).poisoned_index, index)  # seeded
    split = backdoor_split(poisoned)
    assert torch.equal(split.forget_index, index) and len(split.retain) == len(digits.train) - len(index)
    assert (split.forget.labels == 0).all() and split.kind == "random"


def test_attack_success_rate_counts_triggered_non_target_images(digits):
    poisoned = poison(digits.train, 0.1, target=0)
    assert attack_success_rate(ConstantModel(0), digits.test, poisoned) == 100.0
    assert attack_success_rate(ConstantModel(1), digits.test, poisoned) == 0.0
    metrics = backdoor_metrics(ConstantModel(1), digits.test, poisoned)
    assert metrics["clean_accuracy"] == pytest.approx(100.0 * float((digits.test.labels == 1).float().mean()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"fraction": 0.0}, "poisoned fraction must be in (0, 1)"), ({"target": 10}, "target class 10 does not exist")],
)
def test_poison_bad_input(digits, kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        poison(digits.train, **{"fraction": 0.1, "target": 0, **kwargs})
