"""Unstructured sparsity masks and their enforcement.

A `Masks` holds one boolean tensor (True = kept) per pruned weight, by parameter name.
The prunable weights are every Conv2d weight and every Linear weight except the
classifier's (method.md §5: conv weights, classifier/BN/bias excluded; the Linear
layers of a ViT are its convs).

Enforcement (`Masks.enforced`) zeroes the pruned weights and masks their gradients.
With zero weights, zero gradients and fresh optimizer state, SGD (momentum, weight
decay) and Adam(W) leave a pruned weight exactly zero after every step, so the mask holds
*during* training too, whoever owns the optimizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modhifi_core.errors import InputError
from modhifi_core.models import classifier_name

EXTRA_PREFIX = "mask/"


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights unstructured pruning may zero, by parameter name."""
    classifier = classifier_name(model)
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name != classifier
    }


def check_sparsity(sparsity: float) -> float:
    """`sparsity` as a float in [0, 1), or `InputError` naming the bad value."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise InputError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


@dataclass
class Masks:
    """Boolean keep-masks (True = kept) of weights, by parameter name."""

    tensors: dict[str, Tensor]

    @classmethod
    def dense(cls, model: nn.Module) -> Masks:
        """All-True masks over the prunable weights."""
        return cls({name: torch.ones_like(w, dtype=torch.bool) for name, w in prunable_weights(model).items()})

    @property
    def sparsity(self) -> float:
        """Fraction of the masked entries that are pruned."""
        total = sum(t.numel() for t in self.tensors.values())
        kept = sum(int(t.sum()) for t in self.tensors.values())
        return 1.0 - kept / total if total else 0.0

    def check(self, model: nn.Module) -> None:
        """`InputError` unless every mask names a parameter of `model` of the same shape."""
        params = dict(model.named_parameters())
        for name, mask in self.tensors.items():
            if name not in params:
                raise InputError(f"sparsity mask names {name!r}, which the model does not have")
            if params[name].shape != mask.shape:
                raise InputError(
                    f"sparsity mask of {name!r} has shape {tuple(mask.shape)}, the weight {tuple(params[name].shape)}"
                )

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights of `model` in place."""
        self.check(model)
        params = dict(model.named_parameters())
        for name, mask in self.tensors.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))

    def violations(self, model: nn.Module) -> int:
        """Number of pruned weights of `model` that are not exactly zero."""
        params = dict(model.named_parameters())
        count = 0
        for name, mask in self.tensors.items():
            count += int((params[name].detach()[~mask.to(params[name].device)] != 0).sum())
        return count

    @contextmanager
    def enforced(self, model: nn.Module) -> Iterator[None]:
        """Zero the pruned weights and their gradients for the duration; re-apply on exit."""
        self.apply(model)
        params = dict(model.named_parameters())
        handles = []
        for name, mask in self.tensors.items():
            keep = mask.to(params[name].device, params[name].dtype)
            handles.append(params[name].register_hook(lambda grad, keep=keep: grad * keep))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self.apply(model)

    def to_extra(self) -> dict[str, Tensor]:
        """Checkpoint `extra` entries (`mask/<param name>`)."""
        return {EXTRA_PREFIX + name: mask.clone() for name, mask in self.tensors.items()}

    @classmethod
    def from_extra(cls, extra: dict[str, Tensor], model: nn.Module) -> Masks | None:
        """The masks stored in a checkpoint's `extra`, checked against `model`; None if none."""
        tensors = {k[len(EXTRA_PREFIX) :]: v.bool() for k, v in extra.items() if k.startswith(EXTRA_PREFIX)}
        if not tensors:
            return None
        masks = cls(tensors)
        masks.check(model)
        return masks
