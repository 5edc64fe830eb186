"""The strength search of the one-shot baselines (FF and IU: "α searched", method.md §5).

Both methods move the weights by a perturbation whose size is set by α. The search
tries every α of a grid and keeps the one that forgets most (highest UA on D_f) while
the accuracy on a probe of D_r stays within `retain_tolerance` points of the original
model's; ties go to the larger α (the strongest perturbation D_r tolerates — for FF,
the most information destroyed). If no α is tolerated, the smallest one is used. The
search only touches D_f and D_r — data the unlearner has — and its time counts in RTE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from modhifi_core.splits import ForgetSplit
from modhifi_core.training import accuracy
from modhifi_core.unlearning.per_sample_gradients import flat_parameters, set_flat


def search_strength(
    model: nn.Module,
    split: ForgetSplit,
    perturbation: Callable[[float], Tensor],
    grid: Sequence[float],
    retain_tolerance: float,
    probe_size: int,
) -> tuple[float, list[dict]]:
    """The chosen α and the table `[{"alpha", "UA", "RA_probe"}]`; `model` is left at
    θ + perturbation(α) for the chosen α."""
    original = flat_parameters(model).clone()
    probe = split.retain.subset(torch.arange(min(probe_size, len(split.retain))))
    floor = accuracy(model, probe) - retain_tolerance
    table = []
    for alpha in sorted(grid):
        set_flat(model, original + perturbation(alpha))
        table.append({"alpha": alpha, "UA": 100.0 - accuracy(model, split.forget), "RA_probe": accuracy(model, probe)})
    tolerated = [row for row in table if row["RA_probe"] >= floor]
    chosen = max(tolerated, key=lambda row: (row["UA"], row["alpha"]))["alpha"] if tolerated else table[0]["alpha"]
    set_flat(model, original + perturbation(chosen))
    return chosen, table
