"""The contract every unlearning method shares (scikit-learn style).

A method is called as `method(model, split, masks=None, **hyperparameters)` and returns
an `UnlearnResult`. Hyper-parameters are a frozen dataclass per method, validated before
anything runs (unknown names and bad values raise `InputError` naming them). The input
model is never modified: the method works on a copy. With `masks` (a sparse model) the
pruned weights stay exactly zero during and after unlearning. `seconds` is the wall-clock
time of the unlearning step itself (the RTE of method.md §5), copying excluded.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.splits import ForgetSplit
from modhifi_core.unstructured.masks import Masks


@dataclass
class UnlearnResult:
    """The unlearned model (eval mode), the unlearning step's wall-clock seconds and a log
    (method name, the hyper-parameters used, and whatever the method reports)."""

    model: nn.Module
    seconds: float
    log: dict[str, Any] = field(default_factory=dict)


def parse_hyperparameters(method: str, params_type: type, given: dict[str, Any]) -> Any:
    """`params_type(**given)`, refusing names it does not have with the valid ones listed."""
    valid = [f.name for f in dataclasses.fields(params_type)]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise InputError(f"unknown hyper-parameter {unknown[0]!r} for method {method!r}; valid: {', '.join(valid)}")
    return params_type(**given)


def run_method(
    method: str,
    body: Callable[[nn.Module, ForgetSplit, Any, Masks | None], dict],
    params_type: type,
    model: nn.Module,
    split: ForgetSplit,
    masks: Masks | None,
    hyperparameters: dict[str, Any],
) -> UnlearnResult:
    """Validate, copy the model, run `body(copy, split, params, masks)` in place under the
    masks, time it, and wrap the result."""
    params = parse_hyperparameters(method, params_type, hyperparameters)
    if not isinstance(split, ForgetSplit):
        raise InputError(f"split must be a ForgetSplit, got {type(split).__name__}")
    if masks is not None:
        masks.check(model)
    model = copy.deepcopy(model)
    start = time.perf_counter()
    if masks is None:
        log = body(model, split, params, None)
    else:
        with masks.enforced(model):
            log = body(model, split, params, masks)
    seconds = time.perf_counter() - start
    model.eval()
    used = {f.name: _plain(getattr(params, f.name)) for f in dataclasses.fields(params)}
    return UnlearnResult(model, seconds, {"method": method, "hyperparameters": used, **log})


def _plain(value: Any) -> Any:
    """A JSON-like form of a hyper-parameter (tensors are described, not copied)."""
    if isinstance(value, torch.Tensor):
        return f"tensor{list(value.shape)}"
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# --- validation helpers used by the hyper-parameter dataclasses -------------------------------


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_float(name: str, value: Any, low: float, high: float = math.inf, low_open: bool = True) -> None:
    """`value` must be a finite number in (low, high] (or [low, high] with `low_open=False`)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise InputError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
