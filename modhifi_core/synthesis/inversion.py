"""Model inversion: optimise inputs until the model itself says they look like its data.

DeepInversion (Yin et al., CVPR 2020) for networks with BatchNorm: a batch of inputs
`x` is optimised so that, at every BN layer, the batch mean and variance of the
activations entering the layer match the layer's running mean and variance (which
summarise the training data), while the model classifies each input as its target
class and two image priors keep it smooth and bounded:

    loss = CE(f(x), y) + bn_weight * Σ_l w_l (‖μ_l(x) − μ̂_l‖₂ + ‖σ²_l(x) − σ̂²_l‖₂)
           + tv_weight * TV(x) + l2_weight * mean(x²)

with `w_l = first_bn_weight` for the BN layer nearest the input and 1 elsewhere.
TV is the mean squared difference of neighbouring pixels. Without BatchNorm the BN
term is absent (class cross-entropy + priors only) and samples are less realistic.
Inputs live in the model's normalised input space and start as standard normal noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modhifi_core.errors import InputError
from modhifi_core.progress import progress

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class InversionConfig:
    """Hyper-parameters of `invert` (defaults: tuned on the digits ResNet-18; the params
    schema's `synthesize` section reads them from here)."""

    steps: int = 100
    lr: float = 0.1
    batch_size: int = 500
    bn_weight: float = 0.05
    first_bn_weight: float = 10.0
    tv_weight: float = 1.0
    l2_weight: float = 0.01

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError(f"synthesis steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise InputError(f"synthesis lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise InputError(f"synthesis batch_size must be >= 1, got {self.batch_size}")
        for name in ("bn_weight", "first_bn_weight", "tv_weight", "l2_weight"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class InversionLog:
    """Loss terms averaged over batches: at the first step and at the last step."""

    bn_loss_start: float
    bn_loss_end: float
    ce_loss_end: float
    bn_layers: int


class BatchStatisticsLoss:
    """Forward hooks on every BN layer; `loss()` is the weighted sum over layers of
    ‖batch mean − running mean‖₂ + ‖batch var − running var‖₂ of the last forward pass."""

    def __init__(self, model: nn.Module, first_weight: float = 1.0) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, _BN)]
        self.first_weight = first_weight
        self._terms: list[Tensor] = []
        self._handles = [layer.register_forward_hook(self._record) for layer in self.layers]

    def _record(self, layer: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
        x = inputs[0]
        dims = [0, *range(2, x.ndim)]
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        norm = torch.linalg.vector_norm
        self._terms.append(norm(mean - layer.running_mean) + norm(var - layer.running_var))

    def loss(self) -> Tensor:
        """The BN-statistics loss of the last forward pass (0 for a model without BN)."""
        if not self._terms:
            return torch.zeros(())
        weights = [self.first_weight] + [1.0] * (len(self._terms) - 1)  # hooks fire in forward order
        total = sum(w * t for w, t in zip(weights, self._terms))
        self._terms = []
        return total

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def total_variation(x: Tensor) -> Tensor:
    """Mean squared difference between vertically and horizontally neighbouring pixels."""
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()


def invert(
    model: nn.Module,
    labels: Tensor,
    image_shape: tuple[int, int, int],
    config: InversionConfig = InversionConfig(),
    seed: int = 0,
) -> tuple[Tensor, InversionLog]:
    """Synthesise one input per entry of `labels` (int64 `(N,)`); returns images
    `(N, *image_shape)` float32 in the model's input space and the loss log.

    Batches of `config.batch_size` are optimised independently (Adam, cosine-decayed
    lr, `config.steps` steps each) in the order given, so a class-balanced label order
    gives class-balanced batches. Seeded: the same seed gives the same images on CPU.
    The model is left unchanged (eval mode, parameters untouched).
    """
    generator = torch.Generator().manual_seed(seed)
    statistics = BatchStatisticsLoss(model, config.first_bn_weight)
    images, starts, ends, ces = [], [], [], []
    try:
        with _frozen(model):
            for first in range(0, len(labels), config.batch_size):
                batch = labels[first : first + config.batch_size]
                x, start, end, ce = _invert_batch(model, statistics, batch, image_shape, config, generator)
                images.append(x)
                starts.append(start * len(batch))
                ends.append(end * len(batch))
                ces.append(ce * len(batch))
    finally:
        statistics.remove()
    n = max(len(labels), 1)
    log = InversionLog(sum(starts) / n, sum(ends) / n, sum(ces) / n, len(statistics.layers))
    return torch.cat(images) if images else torch.empty(0, *image_shape), log


def _invert_batch(
    model: nn.Module,
    statistics: BatchStatisticsLoss,
    labels: Tensor,
    image_shape: tuple[int, int, int],
    config: InversionConfig,
    generator: torch.Generator,
) -> tuple[Tensor, float, float, float]:
    x = torch.randn(len(labels), *image_shape, generator=generator).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=config.lr, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    bn_start = bn = ce = torch.zeros(())
    for step in progress(range(config.steps), desc="synthesize", unit="step"):
        ce = F.cross_entropy(model(x), labels)
        bn = statistics.loss()
        if step == 0:
            bn_start = bn.detach()
        loss = ce + config.bn_weight * bn + config.tv_weight * total_variation(x) + config.l2_weight * x.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return x.detach(), float(bn_start), float(bn.detach()), float(ce.detach())


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; both restored after."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
