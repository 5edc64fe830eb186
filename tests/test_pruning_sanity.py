"""The paper's sanity check on the digits model: the HiFi components carry the prediction.

HiFi components of a layer: for each output channel, the 20% of its input channels with
the highest singleton fidelity. Every perturbed model gets the same BN recalibration.
Asserted: zeroing the HiFi fifth, or Gaussian noise on it, costs several times what the
same edit of a random fifth of the components costs. The paper's literal comparison,
20% HiFi against the 80% non-HiFi, is measured in benchmarks/prune.py and not asserted:
on these small digits models its sign depends on the noise and on the training run
(benchmarks/README.md).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.fidelity import scores_from_statistics
from modhifi_core.statistics import collect_statistics
from modhifi_core.training import accuracy


@pytest.fixture(scope="module")
def setting(tiny_digits_checkpoint):
    ckpt = load_checkpoint(tiny_digits_checkpoint)
    data = load_from_spec(ckpt.metadata["data"])
    calibration = data.train.images[:256]
    stats = collect_statistics(ckpt.model, [calibration])
    modules = dict(ckpt.model.named_modules())
    hifi = {}
    for name, layer_stats in stats.items():
        if name == "conv1":  # one image channel: every component is HiFi
            continue
        layer = modules[name]
        scores = scores_from_statistics(layer_stats, layer, centered=isinstance(layer, nn.Conv2d))
        top = scores.argsort(1, descending=True)[:, : max(1, round(0.2 * scores.shape[1]))]
        hifi[name] = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)
    return ckpt.model, data, calibration, hifi


def perturbed_accuracy(setting, select, noise: float | None, seed: int = 0) -> float:
    """Accuracy after multiplying the selected kernel slices by (1 + noise·N(0,1)), or
    zeroing them when `noise` is None, then recalibrating BN."""
    model, data, calibration, hifi = setting
    generator = torch.Generator().manual_seed(seed)
    edited = copy.deepcopy(model)
    modules = dict(edited.named_modules())
    with torch.no_grad():
        for name, mask in hifi.items():
            weight = modules[name].weight
            chosen = select(mask, generator).view(*mask.shape, *([1] * (weight.ndim - 2))).float()
            if noise is None:
                weight *= 1 - chosen
            else:
                weight += noise * weight * torch.randn(weight.shape, generator=generator) * chosen
    recalibrate_batchnorm(edited, calibration.split(128))
    return accuracy(edited, data.test)


def hifi(mask, generator):
    return mask


def random_fifth(mask, generator):
    return torch.rand(mask.shape, generator=generator) < 0.2


def test_zeroing_the_hifi_fifth_costs_far_more_than_a_random_fifth(setting):
    dense = accuracy(setting[0], setting[1].test)
    drop_hifi = dense - perturbed_accuracy(setting, hifi, None)
    drop_random = dense - perturbed_accuracy(setting, random_fifth, None)
    assert drop_hifi >= 4 * drop_random + 5.0


def test_noise_on_the_hifi_fifth_costs_far_more_than_on_a_random_fifth(setting):
    dense = accuracy(setting[0], setting[1].test)
    drops = {}
    for name, select in (("hifi", hifi), ("random", random_fifth)):
        drops[name] = sum(dense - perturbed_accuracy(setting, select, 2.0, seed) for seed in range(3)) / 3
    assert drops["hifi"] >= 2 * drops["random"] + 2.0
