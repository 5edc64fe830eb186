"""Durability of class forgetting (method.md §3): does the forgetting survive

* **BN recalibration** — re-estimating every BatchNorm's running statistics on the
  retained data (reset, cumulative average, no gradients; `batchnorm.recalibrate_batchnorm`);
* **a relearning attack** — a fixed, small number of SGD steps of cross-entropy training on
  retained data only (the forgotten class never appears as a label), in train mode, so BN
  statistics also move. Defaults (`RelearningAttack`): 50 steps, lr 0.01, batch 64,
  momentum 0.9, no weight decay, batches drawn with replacement-free shuffles from a
  generator seeded by `seed` (0).

Both are audit figures reported beside UA/RA/TA/MIA, as UA (100 − accuracy on D_f, %)
of a modified copy; the model passed in is never changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modhifi_core.batchnorm import recalibrate_batchnorm
from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.splits import ForgetSplit
from modhifi_core.training import TrainConfig, accuracy


@dataclass(frozen=True)
class RelearningAttack:
    """The relearning attack's hyper-parameters (module docstring)."""

    steps: int = 50
    lr: float = 0.01
    batch_size: int = TrainConfig.batch_size
    momentum: float = TrainConfig.momentum
    seed: int = TrainConfig.seed

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0 or not 0 <= self.momentum < 1:
            raise InputError(
                f"relearning attack needs steps >= 0, batch_size >= 1, lr > 0, 0 <= momentum < 1; got {self}"
            )


def forgetting_after_recalibration(model: nn.Module, split: ForgetSplit, batch_size: int = 256) -> float:
    """UA (%) after re-estimating the BN statistics of a copy of `model` on `split.retain`."""
    probe = copy.deepcopy(model)
    recalibrate_batchnorm(probe, split.retain.images.split(batch_size))
    return 100.0 - accuracy(probe, split.forget)


def relearned(model: nn.Module, retain: ArrayDataset, attack: RelearningAttack = RelearningAttack()) -> nn.Module:
    """A copy of `model` after `attack.steps` SGD steps of cross-entropy on `retain` only."""
    if len(retain) == 0:
        raise InputError("the relearning attack needs retained data")
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(probe.parameters(), lr=attack.lr, momentum=attack.momentum)
    generator = torch.Generator().manual_seed(attack.seed)
    device = next(probe.parameters()).device
    order = torch.empty(0, dtype=torch.long)
    for _ in range(attack.steps):
        if len(order) < attack.batch_size:
            order = torch.cat([order, torch.randperm(len(retain), generator=generator)])
        index, order = order[: attack.batch_size], order[attack.batch_size :]
        loss = F.cross_entropy(probe(retain.images[index].to(device)), retain.labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return probe.eval()


def forgetting_after_relearning(
    model: nn.Module, split: ForgetSplit, attack: RelearningAttack = RelearningAttack()
) -> float:
    """UA (%) of `model` after the relearning attack on `split.retain`."""
    return 100.0 - accuracy(relearned(model, split.retain, attack), split.forget)


def durability_metrics(
    model: nn.Module, split: ForgetSplit, attack: RelearningAttack = RelearningAttack()
) -> dict[str, float]:
    """`{"UA_after_bn_recalibration", "UA_after_relearning"}` in percent (module docstring)."""
    return {
        "UA_after_bn_recalibration": forgetting_after_recalibration(model, split),
        "UA_after_relearning": forgetting_after_relearning(model, split, attack),
    }
