"""A PNG grid of samples a person can look at: one row per class, the model's verdict
on each sample marked (a red frame where the model disagrees with the target label)."""

from __future__ import annotations

import io

import torch
from torch import Tensor

from modhifi_core.data import ArrayDataset


def render_preview(
    samples: ArrayDataset,
    predicted: Tensor | None,
    title: str,
    per_row: int = 8,
    max_classes: int = 20,
) -> bytes:
    """PNG bytes: up to `per_row` samples of each of the first `max_classes` classes
    present, each row labelled with its class and the model's agreement on that class
    (`predicted`: the model's labels `(N,)`, or None when there is no model verdict).

    One-channel images share one grey scale (1st to 99th percentile of all samples);
    three-channel images are min-max scaled one by one. Unlabelled samples (-1) are
    shown as one row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [int(k) for k in torch.unique(samples.labels)][:max_classes]
    columns = min(per_row, max(int((samples.labels == k).sum()) for k in classes))
    low, high = _grey_range(samples.images)
    fig, axes = plt.subplots(
        len(classes), columns, figsize=(1.2 + 0.9 * columns, 0.7 + 0.9 * len(classes)), squeeze=False
    )
    for row, k in enumerate(classes):
        index = torch.nonzero(samples.labels == k).flatten()
        for col in range(columns):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(index):
                ax.axis("off")
                continue
            i = int(index[col])
            image = samples.images[i]
            if image.shape[0] == 3:
                image = image.permute(1, 2, 0)
                image = (image - image.min()) / (image.max() - image.min() + 1e-8)
                ax.imshow(image.numpy())
            else:
                ax.imshow(image.mean(0).numpy(), cmap="gray", vmin=low, vmax=high)
            if predicted is not None and k >= 0 and int(predicted[i]) != k:
                for spine in ax.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(2.5)
        axes[row][0].set_ylabel(_row_label(k, index, predicted), rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10)
    note = f"up to {columns} samples per class shown"
    if predicted is not None:
        note += " · red frame: the model predicts another class"
    fig.supxlabel(note, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _row_label(k: int, index: Tensor, predicted: Tensor | None) -> str:
    if k < 0:
        return "unlabelled"
    if predicted is None:
        return f"class {k}"
    agree = 100.0 * float((predicted[index] == k).float().mean())
    return f"class {k}\nmodel agrees {agree:.0f}%"


def _grey_range(images: Tensor) -> tuple[float, float]:
    flat = images.flatten().float()
    if flat.numel() > 1_000_000:  # quantile refuses huge inputs; a strided subsample is enough
        flat = flat[:: flat.numel() // 1_000_000 + 1]
    return float(torch.quantile(flat, 0.01)), float(torch.quantile(flat, 0.99))
