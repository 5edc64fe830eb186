"""Heavy end-to-end unlearning checks on fully trained digits models (`pytest -m slow`)."""

from __future__ import annotations

import pytest
import torch

from modhifi_core.models import ModelConfig, build_model
from modhifi_core.splits import class_split
from modhifi_core.training import TrainConfig, accuracy, train_model
from modhifi_core.unlearning import unlearn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_model(digits):
    """The default digits model: ResNet-18 width 16, 30 epochs (TrainConfig defaults), seed 0."""
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    train_model(model, digits.train, TrainConfig())
    return model


def test_modhifi_u_on_the_default_model(default_model, digits):
    # Issue 4: UA >= 98 and RA within 5 points of the original, for class 3 (params.yaml's
    # forget class). Measured: UA 100 and RA 97 (2 torch threads) or 100 (1 thread) — the
    # thread count changes the trained weights; original RA 100.
    split = class_split(digits.train, 3)
    result = unlearn(default_model, split, "modhifi")
    assert 100.0 - accuracy(result.model, split.forget) >= 98.0
    assert accuracy(result.model, split.retain) >= accuracy(default_model, split.retain) - 5.0
    assert result.seconds < 10.0  # scores from one pass over ~145 images


def test_backdoor_cleansing_dense_and_prune_then_unlearn(digits):
    from benchmarks.backdoor import backdoor_metrics, backdoor_split, poison
    from modhifi_core.unstructured import prune_unstructured

    poisoned = poison(digits.train, fraction=0.1, target=0, seed=0)
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    train_model(model, poisoned.train, TrainConfig(epochs=8))
    before = backdoor_metrics(model, digits.test, poisoned)
    assert before["ASR"] > 90.0  # measured 100: the 4x4 patch is learnt
    split = backdoor_split(poisoned)
    cleansed = backdoor_metrics(unlearn(model, split, "rl").model, digits.test, poisoned)
    assert cleansed["ASR"] < 10.0 and cleansed["clean_accuracy"] > before["clean_accuracy"] - 3.0  # measured 0.6 / 97.8
    retrain = TrainConfig(epochs=8)
    sparse, masks, _ = prune_unstructured(model, poisoned.train, "omp", 0.9, init_state=init, retrain=retrain)
    assert backdoor_metrics(sparse, digits.test, poisoned)["ASR"] > 90.0  # pruning alone keeps the backdoor
    after = backdoor_metrics(unlearn(sparse, split, "l1sparse", masks=masks).model, digits.test, poisoned)
    assert after["ASR"] < 75.0  # measured 55: l1-sparse unlearning of the sparse model removes part of it
