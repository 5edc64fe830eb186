"""Where and in what precision a model computes: the one device/dtype seam of the engine.

    compute = resolve("auto", "bfloat16")     # Compute(device='cuda', dtype=torch.bfloat16) on a GPU machine
    place(model, compute)                     # weights moved and cast; inputs follow (a forward pre-hook)
    ... every stage runs ...
    restore(model)                            # back on the CPU in the source's dtype, before it is saved

`resolve` is the single source of the defaults (`auto`, `float32`) and the one check of
the values: a bad device or dtype, or `cuda` asked on a machine without CUDA, is one
`InputError` line. `place` casts the weights and registers a forward pre-hook on the
model that moves its tensor inputs to the weights' device (and floating ones to their
dtype), so every engine loop that feeds the model — statistics, scoring, synthesis,
training, evaluation — runs on the chosen device and dtype without each casting its
batches. The dtype the model had before it was first placed (its source's) is kept on the
model (`SOURCE_DTYPE`), and `restore` casts back to it: a saved model keeps its source's
dtype. Statistics stay float64 whatever the compute dtype (`modhifi_core.statistics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modhifi_core.errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SOURCE_DTYPE = "modhifi_source_dtype"  # the attribute `place` sets on a model: the dtype it was loaded in
_HOOKED = "modhifi_inputs_follow"  # set once the input-moving pre-hook is registered


@dataclass(frozen=True)
class Compute:
    """A resolved setting: a concrete `torch.device` and `torch.dtype`."""

    device: torch.device
    dtype: torch.dtype

    def describe(self) -> dict[str, str]:
        """`{"device": "cpu", "dtype": "bfloat16"}`: what a run records in its metrics and lineage."""
        return {"device": str(self.device), "dtype": dtype_name(self.dtype)}


def resolve(device: str = "auto", dtype: str = "float32") -> Compute:
    """`device` (`auto`: CUDA when available, else the CPU; `cpu`, `cuda`, `cuda:N`) and
    `dtype` (`float32`, `bfloat16`, `float16`) as a `Compute`; anything else, or a CUDA
    device this machine does not have, is one `InputError` line."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    name = str(device).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    backend, _, index = name.partition(":")
    if backend not in ("cpu", "cuda") or (index and (backend == "cpu" or not index.isdigit())):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if backend == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked, but this machine has no CUDA device (use --device cpu or auto)")
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise InputError(
                f"device {device!r} asked, but this machine has {count} CUDA device(s): cuda:0..{count - 1}"
            )
    return Compute(torch.device(name), DTYPES[dtype])


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `bfloat16`."""
    return str(dtype).removeprefix("torch.")


def model_compute(model: nn.Module) -> Compute:
    """Where `model`'s weights are and their floating dtype (float32 for a model without any)."""
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    if first is None:
        return Compute(torch.device("cpu"), torch.float32)
    return Compute(first.device, first.dtype)


def place(model: nn.Module, compute: Compute | None) -> nn.Module:
    """Move and cast `model` (in place; returned) to `compute` (None: leave it where it is)
    and make its inputs follow its weights (see the module docstring). The first call
    records the dtype the model had (its source's) for `restore`."""
    if compute is None:
        return model
    if getattr(model, SOURCE_DTYPE, None) is None:
        setattr(model, SOURCE_DTYPE, model_compute(model).dtype)
    model.to(device=compute.device, dtype=compute.dtype)
    if not getattr(model, _HOOKED, False):
        model.register_forward_pre_hook(_inputs_follow_weights, with_kwargs=True)
        setattr(model, _HOOKED, True)
    return model


def restore(model: nn.Module, like: nn.Module | None = None) -> Compute:
    """Put `model` (in place) back on the CPU in its source's dtype — the one `place`
    recorded on it, or on `like` (the model it was made from), else its own — for saving.
    Returns where and in what dtype it was before (what the run computed in)."""
    was = model_compute(model)
    source = getattr(model, SOURCE_DTYPE, None) or getattr(like, SOURCE_DTYPE, None) or was.dtype
    model.to(device="cpu", dtype=source)
    return was


def _inputs_follow_weights(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: tensor inputs onto the weights' device, floating ones in their dtype."""
    where = model_compute(module)
    return _moved(args, where), _moved(kwargs, where)


def _moved(value: Any, where: Compute) -> Any:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            return value.to(device=where.device, dtype=where.dtype)
        return value.to(device=where.device)
    if isinstance(value, tuple):
        return tuple(_moved(v, where) for v in value)
    if isinstance(value, list):
        return [_moved(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _moved(v, where) for k, v in value.items()}
    return value


def requested(device: str | None = None, dtype: str | None = None) -> Compute | None:
    """The `device`/`dtype` keywords of an engine operation: None for both (the model
    stays where the caller put it), else `resolve` of them (a missing one: its default)."""
    if device is None and dtype is None:
        return None
    given = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
    return resolve(**given)
