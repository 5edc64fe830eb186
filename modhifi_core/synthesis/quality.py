"""How good a set of calibration samples is, judged by the model itself.

* agreement: percentage of samples the model classifies as their target label
  (100 = every sample is recognised as the class it was made for; chance is
  100 / num_classes).
* diversity: mean pairwise cosine distance `1 − cos(f_i, f_j)` between the
  penultimate features (the classifier's input) of samples with the same label,
  averaged over the labels with at least two samples. 0 means every sample of a class
  looks the same to the model; real data sets the scale, so compare it with
  `diversity(model, real_data)` (the ratio is reported when reference data is given).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modhifi_core.data import ArrayDataset
from modhifi_core.models import classifier_name
from modhifi_core.training import predict


def agreement(predicted: Tensor, labels: Tensor) -> float:
    """Percentage of labelled samples (label >= 0) with `predicted == labels`; NaN if none."""
    labelled = labels >= 0
    if not labelled.any():
        return float("nan")
    return 100.0 * float((predicted[labelled] == labels[labelled]).float().mean())


@torch.no_grad()
def penultimate_features(model: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """The input of the model's classifier (its last Linear layer), `(N, features)`."""
    classifier = model.get_submodule(classifier_name(model))
    captured: list[Tensor] = []
    handle = classifier.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].flatten(1)))
    try:
        predict(model, images, batch_size)
    finally:
        handle.remove()
    return torch.cat(captured) if captured else torch.empty(0)


def diversity(model: nn.Module, samples: ArrayDataset, max_per_class: int = 500) -> float:
    """Within-class mean pairwise cosine distance of penultimate features (see module
    docstring); the first `max_per_class` samples of each class are used. NaN when no
    class has two samples."""
    features = torch.nn.functional.normalize(penultimate_features(model, samples.images).double(), dim=1)
    spreads = []
    for k in torch.unique(samples.labels):
        if k < 0:
            continue
        f = features[samples.labels == k][:max_per_class]
        n = len(f)
        if n < 2:
            continue
        similarity = f @ f.T
        mean_similarity = (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1))
        spreads.append(1.0 - float(mean_similarity))
    return sum(spreads) / len(spreads) if spreads else float("nan")
