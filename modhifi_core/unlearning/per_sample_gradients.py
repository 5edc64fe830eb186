"""Per-sample gradients of the cross-entropy, flattened over the trainable parameters.

Used by Fisher forgetting (the diagonal empirical Fisher) and influence unlearning
(the WoodFisher inverse). Computed with `torch.func` (vmap over a functional call) in
eval mode, so BatchNorm uses its running statistics and each sample's gradient is its
own. The flat layout follows `model.named_parameters()` order (`flat_parameters`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from modhifi_core.data import ArrayDataset
from modhifi_core.unstructured.masks import Masks


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def flat_parameters(model: nn.Module) -> Tensor:
    """The trainable parameters as one detached vector (the gradients' layout)."""
    return torch.cat([p.detach().reshape(-1) for p in trainable_parameters(model).values()])


@torch.no_grad()
def set_flat(model: nn.Module, values: Tensor) -> None:
    """θ ← values, a vector in the `flat_parameters` layout, in place."""
    start = 0
    for p in trainable_parameters(model).values():
        p.copy_(values[start : start + p.numel()].view_as(p))
        start += p.numel()


def flat_keep(model: nn.Module, masks: Masks | None) -> Tensor | None:
    """1 for every free entry of `flat_parameters`, 0 for pruned weights; None without masks."""
    if masks is None:
        return None
    parts = []
    for name, p in trainable_parameters(model).items():
        keep = masks.tensors.get(name)
        parts.append((keep if keep is not None else torch.ones_like(p, dtype=torch.bool)).reshape(-1).to(p.device))
    return torch.cat(parts).float()


def per_sample_gradients(model: nn.Module, data: ArrayDataset, chunk: int = 64) -> Iterator[Tensor]:
    """Chunks `(n, P)` of per-sample gradients of the cross-entropy, in data order."""
    was_training = model.training
    model.eval()
    params = {name: p.detach() for name, p in trainable_parameters(model).items()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    device = next(model.parameters()).device

    def loss(p: dict, image: Tensor, label: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (image[None],)), label[None])

    gradient = vmap(grad(loss), in_dims=(None, 0, 0))
    try:
        for start in range(0, len(data), chunk):
            images = data.images[start : start + chunk].to(device)
            labels = data.labels[start : start + chunk].to(device)
            grads = gradient(params, images, labels)
            yield torch.cat([g.reshape(len(images), -1) for g in grads.values()], dim=1)
    finally:
        model.train(was_training)


def mean_gradient(model: nn.Module, data: ArrayDataset, batch_size: int = 256) -> Tensor:
    """The gradient of the mean cross-entropy over `data` (eval mode), flat."""
    was_training = model.training
    model.eval()
    params = list(trainable_parameters(model).values())
    device = params[0].device
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float32, device=device)
    try:
        for images, labels in data.loader(batch_size):
            loss = F.cross_entropy(model(images.to(device)), labels.to(device), reduction="sum")
            grads = torch.autograd.grad(loss, params)
            total += torch.cat([g.reshape(-1) for g in grads])
    finally:
        model.train(was_training)
    return total / len(data)
