"""Which channels to keep: from keep levels at one global fraction, or at the fraction
whose predicted FLOPs come closest to a target.

Every group keeps its channels with level ≤ f, best levels first. How many: free widths
(`widths=None`) — at least one (or `round_to`), rounded up to a multiple of `round_to`
for hardware-friendly shapes, each group on its own; or a `widths` rule, which maps the
counts of every group to the counts an architecture can express (e.g. one width per
ResNet stage, so that a stock config describes the result:
`modhifi_core.vision.stock_widths`) and does its own rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from modhifi_core.pruning.coupling import ChannelGroup
from modhifi_core.pruning.flops import predicted_flops

# Group root -> count wanted -> group root -> count kept (each 1..the group's size). Must
# be non-decreasing in every count, so that the FLOPs search stays a bisection.
Widths = Callable[[dict[str, int]], dict[str, int]]
# The pruning loop's hook: a round's channel groups and wanted counts -> kept counts.
WidthsRule = Callable[[list[ChannelGroup], dict[str, int]], dict[str, int]]


def kept_at(
    levels: dict[str, Tensor], fraction: float, round_to: int = 1, widths: Widths | None = None
) -> dict[str, Tensor]:
    """Group root -> sorted kept channel indices at keep fraction `fraction`."""
    counts = {root: int((level <= fraction + 1e-12).sum()) for root, level in levels.items()}
    return _keep_counts(levels, counts, round_to, widths)


def _keep_counts(
    levels: dict[str, Tensor], counts: dict[str, int], round_to: int, widths: Widths | None = None
) -> dict[str, Tensor]:
    chosen = widths(counts) if widths is not None else _free_counts(levels, counts, round_to)
    kept = {}
    for root, level in levels.items():
        if not 1 <= chosen[root] <= len(level):
            raise ValueError(f"the widths rule keeps {chosen[root]} of the {len(level)} channels of group {root}")
        kept[root] = torch.argsort(level, stable=True)[: chosen[root]].sort().values
    return kept


def _free_counts(levels: dict[str, Tensor], counts: dict[str, int], round_to: int) -> dict[str, int]:
    """Each group on its own: at least `round_to` (or all), rounded up to a multiple of it."""
    chosen = {}
    for root, level in levels.items():
        size = len(level)
        count = min(size, max(counts[root], round_to, 1))
        chosen[root] = min(size, -(-count // round_to) * round_to)
    return chosen


class FlopsModel:
    """Prices a keep plan without surgery: each conv/linear's FLOPs scale with its kept
    input times output channels (`flops.predicted_flops`)."""

    def __init__(self, model: nn.Module, groups: list[ChannelGroup], total: int, per_layer: dict[str, int]) -> None:
        modules = dict(model.named_modules())
        self.groups = groups
        self.total = total
        self.per_layer = per_layer
        self.channels = {
            name: (module.weight.shape[1], module.weight.shape[0])
            for name, module in modules.items()
            if isinstance(module, (nn.Conv2d, nn.Linear))
        }

    def __call__(self, kept: dict[str, Tensor]) -> float:
        kept_in, kept_out = {}, {}
        for group in self.groups:
            if group.root not in kept:
                continue
            keep = group.close(kept[group.root])
            removed = group.size - len(keep)
            # A consumer of a concatenation reads several groups: their removals add up.
            for name in group.consumers:
                kept_in[name] = kept_in.get(name, self.channels[name][0]) - removed
            for name, count in group.removed_outputs(keep).items():
                kept_out[name] = kept_out.get(name, self.channels[name][1]) - count
        return predicted_flops(self.total, self.per_layer, self.channels, kept_in, kept_out)


def fraction_for_flops(
    levels: dict[str, Tensor], price: FlopsModel, target: float, round_to: int = 1, widths: Widths | None = None
) -> tuple[float, dict[str, Tensor], float]:
    """The plan whose predicted FLOPs are closest to `target` (absolute FLOPs); returns
    `(fraction, kept, predicted_flops)`, `fraction` the level of the last channel kept.

    Channels of all groups are ordered by level (ties: group order, then channel), and
    the search is over how long a prefix of that order to keep, so the FLOPs move one
    channel at a time even where many groups share a level (uniform allocation); a
    `widths` rule turns each prefix's counts into expressible ones (coarser steps)."""
    roots = list(levels)
    entries = sorted(
        (float(level), group, channel)
        for group, root in enumerate(roots)
        for channel, level in enumerate(levels[root].tolist())
    )
    owner = torch.tensor([group for _, group, _ in entries], dtype=torch.long)

    def plan(prefix: int) -> dict[str, Tensor]:
        counts = torch.bincount(owner[:prefix], minlength=len(roots)).tolist()
        return _keep_counts(levels, dict(zip(roots, counts)), round_to, widths)

    low, high = 0, len(entries)
    while low < high:  # shortest prefix whose FLOPs reach the target
        middle = (low + high) // 2
        if price(plan(middle)) >= target:
            high = middle
        else:
            low = middle + 1
    best = None
    for prefix in sorted({max(low - 1, 0), low}):
        kept = plan(prefix)
        flops = price(kept)
        if best is None or abs(flops - target) < abs(best[2] - target):
            best = (entries[prefix - 1][0] if prefix else 0.0, kept, flops)
    return best
