"""The CSV tables stages write for DVC plots and the report (one writer per table, used by
every kind that writes it), and their reader."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

QUANTILES = {"p10": 0.1, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9}


def layers_csv(layers: dict) -> str:
    """`pruned_layers`: one row per conv/linear: output channels and FLOPs before and after pruning."""
    out = io.StringIO()
    columns = ["layer", "channels_before", "channels_after", "flops_before", "flops_after"]
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for name, row in layers.items():
        (c0, c1), (f0, f1) = row["out_channels"], row["flops"]
        writer.writerow(dict(zip(columns, (name, c0, c1, f0, f1))))
    return out.getvalue()


def summary_csv(scores: dict[str, torch.Tensor]) -> str:
    """`scores_csv`: one row per layer: index, name, shape, quantiles and mean of its scores."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["layer_index", "layer", "c_out", "c_in", *QUANTILES, "mean"], lineterminator="\n")
    writer.writeheader()
    levels = torch.tensor(list(QUANTILES.values()), dtype=torch.float64)
    for index, (name, s) in enumerate(scores.items()):
        q = torch.quantile(s.flatten().double(), levels).tolist()
        row = {
            "layer_index": index,
            "layer": name,
            "c_out": s.shape[0],
            "c_in": s.shape[1],
            "mean": f"{float(s.mean()):.6f}",
        }
        writer.writerow(row | {k: f"{v:.6f}" for k, v in zip(QUANTILES, q)})
    return out.getvalue()


def per_class_csv(per_class: dict[str, list[float]]) -> str:
    """`per_class`: one row per class, one column of test accuracy (%) per model."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", *per_class])
    for k, values in enumerate(zip(*per_class.values())):
        writer.writerow([k, *(f"{v:.2f}" for v in values)])
    return out.getvalue()


def read_csv(path: Path) -> list[dict]:
    """The rows of a table written above, as dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
