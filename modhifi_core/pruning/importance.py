"""Channel importances in Torch-Pruning's call shape: `importance(group) -> Tensor[n]`,
higher = more important, for a full-index `tp.Group`.

Each importance also gives `keep_levels(group)`: for every channel, the smallest global
keep fraction `f ∈ (0, 1]` at which it is kept. One scalar `f` then prunes every group,
and a search over `f` reaches a FLOPs target the same way for every method:

* ModHiFi (`FidelityImportance`): the union rule of method.md §2. For a consumer layer
  with `c_in` inputs, channel i is in output c's HiFi set of size k iff its rank in
  `s_c·` is below k, so it is kept at `f = k / c_in` iff its best rank over the outputs
  is below k. Between integers, channels of equal best rank enter in order of their best
  score; a group keeps a channel iff any consumer keeps it (minimum level).
* Baselines (`RankedImportance` around a Torch-Pruning importance): the same fraction
  of every group, by rank — Torch-Pruning's uniform per-layer pruning.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import Tensor, nn


class FidelityImportance(tp.importance.Importance):
    """ModHiFi singleton fidelity. `scores` maps consumer layers (modules) to their
    `s_ci` `(c_out, c_in)` (`fidelity.scores_from_statistics`); `silent` optionally maps
    them to a bool `(c_out,)` of outputs with no energy, which take no part in the union."""

    def __init__(self, scores: dict[nn.Module, Tensor], silent: dict[nn.Module, Tensor] | None = None) -> None:
        self.scores = scores
        self.silent = silent or {}
        self._levels: dict[nn.Module, Tensor] = {}

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> Tensor:
        return 1.0 - self.keep_levels(group)

    @torch.no_grad()
    def keep_levels(self, group: tp.Group) -> Tensor:
        """Per root channel, the smallest keep fraction at which some consumer keeps it:
        float64 `(n,)` in (0, 1]; 1 for channels no scored consumer reads."""
        levels = torch.ones(len(group[0].idxs), dtype=torch.float64)
        for item in group:
            module = item.dep.target.module
            if module not in self.scores or not group._DG.is_in_channel_pruning_fn(item.dep.handler):
                continue
            consumer = self._consumer_levels(module)[torch.tensor(item.idxs)]
            root = torch.tensor(item.root_idxs)
            levels[root] = torch.minimum(levels[root], consumer)
        return levels

    def _consumer_levels(self, module: nn.Module) -> Tensor:
        if module not in self._levels:
            scores = self.scores[module].double().cpu()  # small (c_out, c_in): ranks on the CPU
            silent = self.silent.get(module)
            if silent is not None and not bool(silent.all()):
                scores = scores[~silent]
            self._levels[module] = union_rule_levels(scores)
        return self._levels[module]


def union_rule_levels(scores: Tensor) -> Tensor:
    """Keep levels `(c_in,)` of one consumer from its singleton scores `(c_out, c_in)`:
    `(best_rank + (q + 1) / n_tier) / c_in`, `q` the channel's position by best score among
    the `n_tier` channels of its best rank. `level ≤ k / c_in` ⇔ in some top-k HiFi set."""
    c_out, c_in = scores.shape
    if c_out == 0:
        return torch.ones(c_in, dtype=torch.float64)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(c_in).expand(c_out, c_in).contiguous())
    best_rank = ranks.min(0).values
    best_score = scores.max(0).values
    # Sort by (best rank ascending, best score descending), then number positions per tier.
    by_score = torch.argsort(best_score, descending=True, stable=True)
    order = by_score[torch.argsort(best_rank[by_score], stable=True)]
    tier = best_rank[order]
    counts = torch.bincount(tier, minlength=c_in)
    position = torch.arange(c_in) - (torch.cumsum(counts, 0) - counts)[tier]
    levels = torch.empty(c_in, dtype=torch.float64)
    levels[order] = (tier + (position + 1) / counts[tier]).double() / c_in
    return levels


class RankedImportance(tp.importance.Importance):
    """A Torch-Pruning importance with uniform allocation: at keep fraction f every group
    keeps its `⌊f·n⌋` most important channels (levels `(rank + 1) / n`)."""

    def __init__(self, base: tp.importance.Importance) -> None:
        self.base = base

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> Tensor:
        return self.base(group)

    @torch.no_grad()
    def keep_levels(self, group: tp.Group) -> Tensor:
        importance = self.base(group).double().cpu()
        order = torch.argsort(importance, descending=True, stable=True)
        levels = torch.empty_like(importance)
        levels[order] = (torch.arange(len(importance), dtype=torch.float64) + 1) / len(importance)
        return levels


class SeededRandomImportance(tp.importance.RandomImportance):
    """Torch-Pruning's random importance drawn from its own seeded generator, so that a
    run is reproducible without touching the global RNG."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, group: tp.Group, **kwargs) -> Tensor:
        return torch.rand(len(group[0].idxs), generator=self.generator)


def magnitude_importance(p: int = 2) -> RankedImportance:
    """Torch-Pruning's group magnitude (Lp norm over every coupled layer, mean-reduced)."""
    return RankedImportance(tp.importance.GroupMagnitudeImportance(p=p))


def random_importance(seed: int = 0) -> RankedImportance:
    return RankedImportance(SeededRandomImportance(seed))
