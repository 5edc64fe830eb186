"""Rebuild records for pruned networks that are not in modhifi's zoo, and the folder that
holds one (`save_rebuild_folder`).

A physically pruned torchvision / timm / Hugging Face network is its dense constructor's
output with some layers resized. `shape_record(pruned, dense)` lists exactly those layers
— the zoo checkpoint's `layer_shapes` (modhifi_core.models) generalised to any module
tree: module name -> `{"weight": shape}` (plus `"groups"` for a conv whose group count
changed, e.g. a depthwise conv pruned with its producer). `apply_shape_record(model,
record)` resizes a fresh dense build to match, so `load_state_dict(strict=True)` on the
pruned weights gives the pruned network back: no pickled modules anywhere.

Resizable: Conv1d/2d (any groups), Linear, BatchNorm1d/2d, LayerNorm and its subclasses
(timm's LayerNorm2d, HF's ConvNeXt/Swin norms), GroupNorm. A record naming anything
else, or a module the architecture lacks, raises InputError.

A network whose format cannot describe its pruned shapes (a torchvision/timm network, a
user's own module) is written as a folder: `model.safetensors`, `rebuild.json` (how to
build the dense network + the shape record) and `modhifi.json` (lineage).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.safe_io import atomic_write_bytes, atomic_write_json

WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "rebuild.json"

_CONV = (nn.Conv1d, nn.Conv2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_NORM_WITH_SHAPE = (nn.LayerNorm, nn.GroupNorm)


def module_shapes(model: nn.Module) -> dict[str, dict]:
    """`{"weight": shape[, "groups": g]}` of every resizable module with a weight, by name."""
    shapes = {}
    for name, module in model.named_modules():
        if not _is_resizable(module) or getattr(module, "weight", None) is None:
            continue
        entry = {"weight": list(module.weight.shape)}
        if isinstance(module, _CONV):
            entry["groups"] = int(module.groups)
        shapes[name] = entry
    return shapes


def shape_record(pruned: nn.Module, dense: nn.Module) -> dict[str, dict]:
    """The entries of `module_shapes(pruned)` that differ from the dense build `dense`."""
    reference = module_shapes(dense)
    return {name: entry for name, entry in module_shapes(pruned).items() if reference.get(name) != entry}


def apply_shape_record(model: nn.Module, record: dict[str, dict]) -> nn.Module:
    """Resize `model`'s modules in place to `record` (new, uninitialised parameters of the
    recorded shapes; load the pruned state dict next). Returns `model`."""
    if not isinstance(record, dict):
        raise InputError(f"a shape record is a mapping of module name -> shape, got {type(record).__name__}")
    for name, entry in record.items():
        _resize(model, name, entry)
    return model


def _is_resizable(module: nn.Module) -> bool:
    return isinstance(module, (*_CONV, nn.Linear, *_BATCHNORM, *_NORM_WITH_SHAPE))


def _resize(model: nn.Module, name: str, entry: dict) -> None:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise InputError(f"shape record names module {name!r}, which the architecture does not have") from None
    if not _is_resizable(module):
        raise InputError(f"shape record resizes {name!r} of unsupported type {type(module).__name__}")
    shape = entry.get("weight") if isinstance(entry, dict) else None
    current = list(module.weight.shape)
    if (
        not isinstance(shape, list)
        or len(shape) != len(current)
        or not all(isinstance(d, int) and d >= 1 for d in shape)
    ):
        raise InputError(f"shape record gives {name!r} an invalid weight shape {shape!r} (now {current})")
    if any(d > c for d, c in zip(shape, current)):  # checked before anything of that size is allocated
        raise InputError(
            f"shape record gives {name!r} a weight shape {shape} wider than the architecture's {current}: "
            "a pruned model is never wider"
        )
    if isinstance(module, _CONV):
        _resize_conv(module, name, shape, entry.get("groups", module.groups))
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = shape
    elif isinstance(module, _BATCHNORM):
        module.num_features = shape[0]
        for buffer in ("running_mean", "running_var"):
            if getattr(module, buffer, None) is not None:
                setattr(module, buffer, getattr(module, buffer).new_zeros(shape[0]))
    elif isinstance(module, nn.GroupNorm):
        if shape[0] % module.num_groups:
            raise InputError(f"shape record: {shape[0]} channels of {name!r} not divisible by its groups")
        module.num_channels = shape[0]
    else:
        if len(module.normalized_shape) != len(shape):
            raise InputError(f"shape record: {name!r} normalises over {len(module.normalized_shape)} dims")
        module.normalized_shape = tuple(shape)
    module.weight = nn.Parameter(module.weight.new_empty(shape))
    if getattr(module, "bias", None) is not None:
        module.bias = nn.Parameter(module.bias.new_empty(shape[0]))


def _resize_conv(module: nn.Module, name: str, shape: list[int], groups: object) -> None:
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or shape[0] % groups:
        raise InputError(f"shape record gives conv {name!r} invalid groups {groups!r} for {shape[0]} outputs")
    module.groups = groups
    module.out_channels, module.in_channels = shape[0], shape[1] * groups


def save_rebuild_folder(model: nn.Module, dense: nn.Module, folder: str | Path, record: dict, lineage: dict) -> Path:
    """Write `folder/model.safetensors` (`model`'s weights), `folder/rebuild.json` (`record`,
    how to build `dense` again, + `layer_shapes`: `shape_record(model, dense)`) and
    `folder/modhifi.json` (`lineage` + code version + the weights' sha256). Atomic: the
    files are written into a staging folder beside `folder`, which replaces an existing
    `folder` only once complete (a killed save leaves the old folder). Returns the folder."""
    from safetensors.torch import save

    from modhifi_core.sources.huggingface import LINEAGE_FILE, _replace_folder, lineage_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    # safetensors refuses tensors that share storage; contiguous copies also drop any
    # views Torch-Pruning left behind.
    state = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
    try:
        atomic_write_bytes(staging / WEIGHTS_FILE, save(state))
        atomic_write_json(staging / RECORD_FILE, {**record, "layer_shapes": shape_record(model, dense)})
        atomic_write_json(staging / LINEAGE_FILE, lineage_file(lineage, [staging / WEIGHTS_FILE]))
        _replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
