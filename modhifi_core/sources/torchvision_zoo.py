"""`torchvision:ARCH` and `timm:ARCH` model sources: build, load weights, save pruned.

    model = load_zoo_model("torchvision:resnet50", weights="resnet50.safetensors", num_classes=1000)
    save_zoo_model(pruned, "torchvision:resnet50", folder, build_kwargs={"num_classes": 10})
    again = load_zoo_folder(folder)    # the pruned network, from weights + shapes only

Architectures are built from their constructors (`torchvision.models.get_model(ARCH,
weights=None, **kwargs)`, `timm.create_model(ARCH, pretrained=False, **kwargs)`), never
downloaded. Weights: a `.safetensors` file, or a state dict saved with `torch.save`
read through `weights_only=True` (no code runs on load). A pruned model is saved as a
folder: `model.safetensors` (the pruned state dict) and `rebuild.json` (the source, the
constructor keyword arguments and the shape record of the resized layers,
`modhifi_core.sources.rebuild`) — loadable without pickled modules.

torchvision and timm are optional (the `zoo` extra) and import only here, on use; they
need torch 2.14.1 + torchvision 0.29.1 (`scripts/zoo_venv.sh` builds that venv), never
the main venv's torch 2.13.0.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from torch import nn

from modhifi_core.errors import InputError
from modhifi_core.sources.rebuild import RECORD_FILE, WEIGHTS_FILE, apply_shape_record, save_rebuild_folder

LIBRARIES = ("torchvision", "timm")
RECORD_FORMAT = "modhifi-zoo-v1"


def parse_source(source: str) -> tuple[str, str]:
    """`"torchvision:resnet50"` -> `("torchvision", "resnet50")`; anything else is refused."""
    library, sep, arch = str(source).partition(":")
    if not sep or library not in LIBRARIES or not arch:
        raise InputError(f"model source must be torchvision:ARCH or timm:ARCH, got {source!r}")
    return library, arch


def check_source(source: str) -> None:
    """Refuse, in one line and before anything is built, a `source` whose library does not
    import here or that names an architecture the library does not have."""
    library, arch = parse_source(source)
    module = _import(library)
    known = module.is_model(arch) if library == "timm" else arch.lower() in module.models.list_models()
    if not known:
        where = "timm.list_models()" if library == "timm" else "torchvision.models.list_models()"
        raise InputError(f"model source {source}: {library} has no architecture {arch!r} (see {where})")


def build_zoo_model(source: str, **build_kwargs) -> nn.Module:
    """A freshly initialised (random) network of `source`, in eval mode. `build_kwargs` go to
    the constructor (e.g. `num_classes=10`, timm's `in_chans=1`)."""
    library, arch = parse_source(source)
    module = _import(library)
    try:
        if library == "torchvision":
            model = module.models.get_model(arch, weights=None, **build_kwargs)
        else:
            model = module.create_model(arch, pretrained=False, **build_kwargs)
    except (ValueError, KeyError, RuntimeError) as exc:  # unknown architecture, bad kwargs
        raise InputError(f"cannot build {source}: {exc}") from None
    except TypeError as exc:
        raise InputError(f"cannot build {source} with {build_kwargs}: {exc}") from None
    return model.eval()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, or of a `torch.save`d state dict (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, a pickle of anything but tensors
        raise InputError(f"unreadable weights file {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} does not hold a state dict of tensors")
    return state


def load_zoo_model(
    source: str, weights: str | Path | None = None, shapes: dict | None = None, **build_kwargs
) -> nn.Module:
    """`source` built with `build_kwargs`, resized to the shape record `shapes` (if any),
    with the tensors of `weights` loaded strictly (every key, every shape)."""
    model = build_zoo_model(source, **build_kwargs)
    if shapes:
        apply_shape_record(model, shapes)
    if weights is not None:
        state = read_state_dict(weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise InputError(f"{weights} does not fit {source}: {' '.join(first[:3])}") from None
    return model.eval()


def save_zoo_model(
    model: nn.Module, source: str, folder: str | Path, build_kwargs: dict | None = None, lineage: dict | None = None
) -> Path:
    """`model`, a (possibly pruned) network of `source` built with `build_kwargs`, as a
    rebuild folder (`rebuild.save_rebuild_folder`: weights, rebuild.json, modhifi.json),
    written atomically. Returns the folder."""
    build_kwargs = dict(build_kwargs or {})
    record = {"format": RECORD_FORMAT, "source": source, "build_kwargs": build_kwargs}
    dense = build_zoo_model(source, **build_kwargs)
    return save_rebuild_folder(model, dense, folder, record, lineage or {})


def load_zoo_folder(folder: str | Path) -> nn.Module:
    """The network saved by `save_zoo_model` in `folder`."""
    folder = Path(folder)
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except FileNotFoundError:
        raise InputError(f"{folder} has no {RECORD_FILE} (not a saved torchvision/timm model)") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{folder / RECORD_FILE} is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise InputError(f"{folder / RECORD_FILE} is not a {RECORD_FORMAT} record")
    return load_zoo_model(
        record["source"], folder / WEIGHTS_FILE, record.get("layer_shapes") or {}, **record.get("build_kwargs", {})
    )


def _import(library: str) -> object:
    try:
        return importlib.import_module(library)
    except ImportError as exc:
        raise InputError(
            f"model source {library}: {library} does not import in this venv ({exc}); run in the zoo venv "
            "(.venv/zoo, built by scripts/zoo_venv.sh or `make test-zoo`: torch 2.14.1 + torchvision 0.29.1 + timm)"
        ) from None
