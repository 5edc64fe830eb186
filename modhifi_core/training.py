"""Supervised training and evaluation: SGD with a cosine schedule, seeded.

The same seed, data and hyper-parameters give bit-identical weights on CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modhifi_core.data import ArrayDataset
from modhifi_core.errors import InputError
from modhifi_core.progress import progress


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of `train_model` (defaults: the digits model)."""

    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")


def train_model(model: nn.Module, data: ArrayDataset, config: TrainConfig = TrainConfig()) -> dict:
    """Train `model` in place with SGD + cosine decay over all steps; returns a log
    `{"seconds", "final_loss", "losses"}` (losses: mean cross-entropy per epoch)."""
    if len(data) == 0:
        raise InputError("no training data")
    torch.manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    steps = config.epochs * -(-len(data) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses = []
    start = time.perf_counter()
    model.train()
    for epoch in progress(range(config.epochs), desc="train", unit="epoch"):
        total, count = 0.0, 0
        for images, labels in data.loader(config.batch_size, shuffle=True, seed=config.seed + epoch):
            loss = F.cross_entropy(model(images), labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(labels)
            count += len(labels)
        losses.append(total / count)
    model.eval()
    return {"seconds": time.perf_counter() - start, "final_loss": losses[-1], "losses": losses}


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits `(N, num_classes)` in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    outputs = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0)


def accuracy(model: nn.Module, data: ArrayDataset) -> float:
    """Top-1 accuracy in percent (0-100); NaN for an empty dataset."""
    if len(data) == 0:
        return float("nan")
    return 100.0 * float((predict(model, data.images).argmax(1) == data.labels).float().mean())


def per_class_accuracy(model: nn.Module, data: ArrayDataset) -> list[float]:
    """Accuracy in percent for each class 0..num_classes-1 (NaN for an absent class)."""
    correct = predict(model, data.images).argmax(1) == data.labels
    result = []
    for k in range(data.num_classes):
        mask = data.labels == k
        result.append(100.0 * float(correct[mask].float().mean()) if mask.any() else float("nan"))
    return result
