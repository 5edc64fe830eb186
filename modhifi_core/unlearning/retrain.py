"""Retrain: the exact-unlearning reference — train from scratch on D_r only (method.md §5).

The architecture is kept and every parameter re-initialised (each module's own
`reset_parameters`; free tensors such as a ViT's position embedding get the ViT
convention, a truncated normal of std 0.02), seeded. A sparse model is retrained from
scratch under its mask. The recipe defaults to the base training of the digits model
(`TrainConfig`: 30 epochs, lr 0.05, batch 64, cosine); pass the recipe the model was
trained with (its checkpoint's `metadata["params"]`) to retrain like for like.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modhifi_core.splits import ForgetSplit
from modhifi_core.training import TrainConfig, train_model
from modhifi_core.unlearning.contract import UnlearnResult, check_float, check_int, run_method
from modhifi_core.unstructured.masks import Masks


@dataclass(frozen=True)
class RetrainParams(TrainConfig):
    """The training recipe: `TrainConfig`'s fields and defaults, checked as every unlearning
    method's hyper-parameters are; `seed` seeds initialisation and shuffling."""

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, 1)
        check_float("lr", self.lr, 0.0, 10.0)
        check_int("batch_size", self.batch_size, 1)
        check_float("momentum", self.momentum, 0.0, 1.0, low_open=False)
        check_float("weight_decay", self.weight_decay, 0.0, 1.0, low_open=False)
        check_float("label_smoothing", self.label_smoothing, 0.0, 1.0, low_open=False)
        check_int("seed", self.seed, 0)


def retrain(model: nn.Module, split: ForgetSplit, masks: Masks | None = None, **hyperparameters) -> UnlearnResult:
    """Retrain from scratch on the retain set (under `masks` for a sparse model)."""
    return run_method("retrain", _retrain, RetrainParams, model, split, masks, hyperparameters)


def _retrain(model: nn.Module, split: ForgetSplit, params: RetrainParams, masks: Masks | None) -> dict:
    reinitialise(model, params.seed)
    if masks is not None:
        masks.apply(model)
    log = train_model(model, split.retain, params)
    return {"final_loss": log["final_loss"], "losses": log["losses"]}


@torch.no_grad()
def reinitialise(model: nn.Module, seed: int) -> None:
    """Fresh, seeded initialisation of every parameter (and BN statistics) in place."""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for parameter in module.parameters(recurse=False):
                nn.init.trunc_normal_(parameter, std=0.02)
