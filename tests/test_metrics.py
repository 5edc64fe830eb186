"""The Unlearn-Sparse metrics (method.md §5) on constructed cases with known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.metrics import average_gap, confidence, mia_efficacy, unlearning_metrics, unlearning_test_set
from modhifi_core.splits import class_split, random_split


class LookupModel(nn.Module):
    """A perfect memoriser: a confident one-hot on the stored label for an image it has
    stored, a weak guess (the nearest stored label, margin 1) for any other image."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> None:
        super().__init__()
        self.keys = images.flatten(1)
        self.labels = labels
        self.num_classes = num_classes
        self.anchor = nn.Parameter(torch.zeros(1))  # predict() reads the device off a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distances = torch.cdist(x.flatten(1), self.keys, compute_mode="donot_use_mm_for_euclid_dist")
        nearest = distances.argmin(1)
        seen = distances.min(1).values < 1e-6
        margin = torch.where(seen, 8.0, 1.0)
        return nn.functional.one_hot(self.labels[nearest], self.num_classes).float() * margin[:, None]


def test_confidence_is_the_softmax_probability_of_the_true_label(digits):
    data = digits.test.subset(torch.arange(20))
    model = LookupModel(data.images, data.labels)
    expected = torch.exp(torch.tensor(8.0)) / (torch.exp(torch.tensor(8.0)) + 9)
    assert confidence(model, data) == pytest.approx([float(expected)] * 20, rel=1e-5)


def test_mia_calls_memorised_forget_samples_members_and_unseen_ones_non_members(digits):
    split = random_split(digits.train, 0.1, seed=0)
    memorised = LookupModel(digits.train.images, digits.train.labels)
    # The forget samples were trained on: confidence 0.997 like the members -> efficacy 0%.
    assert mia_efficacy(memorised, split.retain, split.forget, digits.test) == 0.0
    # A model that never stored them gives them test-like confidence -> all non-members.
    unseen = LookupModel(split.retain.images, split.retain.labels)
    assert mia_efficacy(unseen, split.retain, split.forget, digits.test) == 100.0


def test_mia_members_are_the_first_test_size_retain_samples(digits, monkeypatch):
    import modhifi_core.metrics as metrics

    seen = {}
    real_confidence = metrics.confidence

    def spy(model, data):
        seen.setdefault("first", data)
        return real_confidence(model, data)

    monkeypatch.setattr(metrics, "confidence", spy)
    split = class_split(digits.train, 3)
    test = digits.test.subset(torch.arange(50))
    metrics.mia_efficacy(LookupModel(split.retain.images, split.retain.labels), split.retain, split.forget, test)
    assert torch.equal(seen["first"].images, split.retain.images[:50])


def test_class_wise_metrics_use_the_test_set_without_the_forgotten_class(digits):
    split = class_split(digits.train, 3)
    test = unlearning_test_set(digits.test, split)
    assert len(test) == int((digits.test.labels != 3).sum()) and not (test.labels == 3).any()
    assert unlearning_test_set(digits.test, random_split(digits.train, 0.1)) is digits.test
    # A memoriser of D_r only: RA 100, UA 100 - (nearest-neighbour accuracy on class 3, never exact).
    model = LookupModel(split.retain.images, split.retain.labels)
    result = unlearning_metrics(model, split, digits.test)
    assert result["RA"] == 100.0
    assert result["UA"] == 100.0  # every class-3 neighbour has another label
    assert set(result) == {"UA", "RA", "TA", "MIA"}


def test_average_gap():
    retrain = {"UA": 100.0, "RA": 99.0, "TA": 97.0, "MIA": 100.0}
    assert average_gap(retrain, retrain) == 0.0
    other = {"UA": 90.0, "RA": 100.0, "TA": 95.0, "MIA": 99.0}
    assert average_gap(other, retrain) == pytest.approx((10 + 1 + 2 + 1) / 4)
    with pytest.raises(InputError, match="missing MIA"):
        average_gap({"UA": 1.0, "RA": 1.0, "TA": 1.0}, retrain)


def test_mia_refuses_empty_sets(digits):
    split = class_split(digits.train, 3)
    empty = digits.test.subset(torch.arange(0))
    with pytest.raises(InputError, match="non-empty"):
        mia_efficacy(LookupModel(split.retain.images, split.retain.labels), split.retain, split.forget, empty)
