"""`unlearn(model, split, method=..., **hyperparameters)`: every unlearning method, one call.

| name       | method                                    | data it touches |
|------------|-------------------------------------------|-----------------|
| `modhifi`  | ModHiFi-U (§3), no fine-tuning            | D_f (scores only) |
| `retrain`  | retrain from scratch (exact reference)    | D_r |
| `ft`       | fine-tune                                 | D_r |
| `ga`       | gradient ascent                           | D_f |
| `rl`       | random labels                             | D_f + D_r |
| `ff`       | Fisher forgetting                         | D_r (+ D_f, D_r for the α search) |
| `iu`       | influence unlearning (WoodFisher)         | D_f, D_r |
| `l1sparse` | ℓ1-sparse fine-tuning                     | D_r |
| `logit-mask` | the class's classifier row negated: a control, NOT forgetting | D_f (scores only) |

Each returns an `UnlearnResult` and leaves `model` untouched; `masks` (a sparse model's
`Masks`) keeps pruned weights exactly zero throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.splits import ForgetSplit
from modhifi_core.unlearning.contract import UnlearnResult
from modhifi_core.unlearning.finetune_based import finetune, gradient_ascent, l1_sparse, random_labels
from modhifi_core.unlearning.fisher import fisher_forgetting
from modhifi_core.unlearning.influence import influence_unlearning
from modhifi_core.unlearning.logit_mask import logit_mask
from modhifi_core.unlearning.modhifi_u import modhifi_u
from modhifi_core.unlearning.retrain import retrain
from modhifi_core.unstructured.masks import Masks

METHODS: dict[str, Callable[..., UnlearnResult]] = {
    "modhifi": modhifi_u,
    "retrain": retrain,
    "ft": finetune,
    "ga": gradient_ascent,
    "rl": random_labels,
    "ff": fisher_forgetting,
    "iu": influence_unlearning,
    "l1sparse": l1_sparse,
    "logit-mask": logit_mask,
}
# The methods whose work is activation-statistics passes (they take an `executor`).
STATISTICS_METHODS = ("modhifi", "logit-mask")


def unlearn(
    model: nn.Module,
    split: ForgetSplit,
    method: str = "modhifi",
    masks: Masks | None = None,
    *,
    executor: Executor | None = None,
    **hyperparameters,
) -> UnlearnResult:
    """Unlearn `split.forget` from `model` with `method` (a name of `METHODS`). `executor`:
    the methods that collect activation statistics (`STATISTICS_METHODS`) run those passes
    as shards on it; the gradient-based ones run in this process and do not use it."""
    if method not in METHODS:
        raise InputError(f"unknown unlearning method {method!r}; choose one of {', '.join(METHODS)}")
    placement = {"executor": executor} if method in STATISTICS_METHODS else {}
    return METHODS[method](model, split, masks=masks, **placement, **hyperparameters)
