"""The Unlearn-Sparse metrics (method.md §5): UA, RA, TA, MIA-Efficacy and Avg. Gap.

All are percentages (0-100). For a split `s` of a training set and the dataset's test set:

* UA = 100 - accuracy on D_f;  RA = accuracy on D_r;
* TA = accuracy on the test set — for class-wise forgetting the test set without the
  forgotten class (`unlearning_test_set`);
* MIA-Efficacy: an `SVC(C=3, gamma="auto", kernel="rbf")` is fitted on the confidence
  (softmax probability of the true label) of members — the first |test| samples of D_r,
  label 1 — against non-members — the test set, label 0; the efficacy is the percentage
  of D_f it predicts non-member. The test set here is the same one TA uses.
* Avg. Gap = mean |metric - Retrain's metric| over UA, RA, TA and MIA.

RTE (the unlearning step's wall-clock seconds) is measured by the method itself
(`UnlearnResult.seconds`). The durability audit — UA after BN recalibration on D_r and
after a relearning attack on D_r — is `modhifi_core.durability.durability_metrics`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.splits import ForgetSplit
from modhifi_core.training import accuracy, predict

GAP_METRICS = ("UA", "RA", "TA", "MIA")


def confidence(model: nn.Module, data: ArrayDataset) -> np.ndarray:
    """Softmax probability of each sample's true label, shape (N,)."""
    probabilities = torch.softmax(predict(model, data.images), dim=1)
    return probabilities.gather(1, data.labels[:, None]).squeeze(1).double().numpy()


def mia_efficacy(model: nn.Module, retain: ArrayDataset, forget: ArrayDataset, test: ArrayDataset) -> float:
    """Percentage of `forget` that the confidence SVC predicts non-member (method.md §5)."""
    from sklearn.svm import SVC

    if len(test) == 0 or len(retain) == 0 or len(forget) == 0:
        raise InputError("MIA-Efficacy needs non-empty retain, forget and test sets")
    members = retain.subset(torch.arange(min(len(test), len(retain))))
    features = np.concatenate([confidence(model, members), confidence(model, test)])[:, None]
    targets = np.concatenate([np.ones(len(members)), np.zeros(len(test))])
    classifier = SVC(C=3, gamma="auto", kernel="rbf").fit(features, targets)
    predicted_member = classifier.predict(confidence(model, forget)[:, None])
    return 100.0 * float(np.mean(predicted_member == 0))


def unlearning_test_set(test: ArrayDataset, split: ForgetSplit) -> ArrayDataset:
    """The test set TA and the MIA use: without the forgotten class for class-wise forgetting."""
    if split.forget_class is None:
        return test
    return test.of_classes([k for k in range(test.num_classes) if k != split.forget_class])


def unlearning_metrics(model: nn.Module, split: ForgetSplit, test: ArrayDataset) -> dict[str, float]:
    """`{"UA", "RA", "TA", "MIA"}` of `model` for `split`, in percent."""
    test_set = unlearning_test_set(test, split)
    return {
        "UA": 100.0 - accuracy(model, split.forget),
        "RA": accuracy(model, split.retain),
        "TA": accuracy(model, test_set),
        "MIA": mia_efficacy(model, split.retain, split.forget, test_set),
    }


def average_gap(metrics: dict[str, float], retrain_metrics: dict[str, float]) -> float:
    """Mean absolute difference to Retrain's metrics over UA, RA, TA and MIA."""
    missing = [k for k in GAP_METRICS if k not in metrics or k not in retrain_metrics]
    if missing:
        raise InputError(f"Avg. Gap needs the metrics {', '.join(GAP_METRICS)}; missing {', '.join(missing)}")
    return float(np.mean([abs(metrics[k] - retrain_metrics[k]) for k in GAP_METRICS]))
