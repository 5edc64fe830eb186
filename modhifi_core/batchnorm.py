"""BatchNorm recalibration: re-estimate running statistics after a modification.

After pruning or editing weights, the BN running mean/var no longer describe the
activations they normalise. Recalibration resets them and takes the cumulative
average over the calibration batches (momentum=None), without gradients and without
touching any learned parameter.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset and re-estimate every BN layer's running statistics on `batches` (image
    tensors `(N, C, H, W)`, or `(images, labels)` pairs). Returns the number of samples
    seen; the model is left in eval mode. A model without BN is returned unchanged."""
    layers = [m for m in model.modules() if isinstance(m, _BN)]
    if not layers:
        return 0
    saved = [(m.momentum, m.training) for m in layers]
    was_training = model.training
    device = next(model.parameters()).device
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    model.eval()
    for m in layers:
        m.train()
    seen = 0
    try:
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(images.to(device))
            seen += len(images)
    finally:
        for m, (momentum, _) in zip(layers, saved):
            m.momentum = momentum
        model.train(was_training)
        model.eval()
    if seen == 0:
        raise ValueError("BN recalibration got no calibration batches")
    return seen
