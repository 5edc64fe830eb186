"""The registry of model kinds: the one place that decides what a model source holds.

    kind = kind_of(params.model.source)     # None or FILE.pt, hf:DIR, torchvision:ARCH, timm:ARCH,
                                            # python:PACKAGE.MODULE:FACTORY
    kind.name, kind.defaults, kind.skipped  # then only the adapter is asked

`kind_of` is the only code that reads a source string or a `config.json` to tell kinds
apart. Each kind is one adapter (`kinds.base.ModelKind`) in its own folder, registered
below by one line and imported only when a source of it is met: a run of one kind never
imports (and its DVC stages never depend on) another kind's code.

A new kind: a folder `kinds/<name>/` with a `ModelKind` subclass, one `register` line, and
the conformance suite (`tests/test_kinds_conformance.py`) run over it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from kinds.base import KindDefaults, ModelKind
from modhifi_core.errors import InputError

# kind name -> "module:Class" (imported lazily)
REGISTRY: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Add kind `name`, implemented by `target` (`"package.module:Class"`, a `ModelKind`)."""
    REGISTRY[name] = target


register("zoo", "kinds.zoo:ZooKind")
register("causal-lm", "kinds.language:CausalLMKind")
register("encoder", "kinds.language:EncoderKind")
register("image-classification", "kinds.image:HFImageKind")
register("torchvision", "kinds.image:TorchvisionKind")
register("python", "kinds.python_module:PythonModuleKind")

FORMS = "FILE.pt (a modhifi checkpoint), hf:DIR, torchvision:ARCH, timm:ARCH or python:PACKAGE.MODULE:FACTORY"


def kind_class(name: str) -> type[ModelKind]:
    """The adapter class registered as `name`."""
    if name not in REGISTRY:
        raise InputError(f"unknown model kind {name!r}; kinds are {', '.join(REGISTRY)}")
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def kind_name(source: str | Path | None, root: Path | None = None) -> str:
    """The name of the kind `source` holds (relative folders resolved against `root`):
    None or a `.pt` file: `zoo`; `hf:DIR`: what its config.json holds (`causal-lm`,
    `encoder`, `image-classification`); `torchvision:`/`timm:ARCH`: `torchvision`;
    `python:...`: `python`. One InputError line for anything else."""
    if source is None:
        return "zoo"
    text = str(source)
    scheme, sep, rest = text.partition(":")
    if not sep or Path(text).suffix == ".pt" or "/" in scheme:
        if Path(text).suffix == ".pt":
            return "zoo"
        raise InputError(f"model source {text!r} is not one of {FORMS}")
    if scheme == "hf":
        # imported by name, like the adapters: a run of another kind neither loads
        # transformers nor depends (in its dvc.yaml) on the Hugging Face reader
        model_kind = importlib.import_module("modhifi_core.sources.huggingface").model_kind
        return model_kind(hf_folder(text, root))
    if scheme in ("torchvision", "timm"):
        return "torchvision"
    if scheme == "python":
        return "python"
    raise InputError(f"model source {text!r} is not one of {FORMS}")


def hf_folder(source: str | Path, root: Path | None = None) -> Path:
    """The folder an `hf:DIR` source names (a plain DIR too), a relative one resolved against
    `root` (None: the current folder). The engine takes folders, never `hf:` strings."""
    folder = Path(str(source).removeprefix("hf:")).expanduser()
    return folder if root is None or folder.is_absolute() else root / folder


def kind_of(source: str | Path | None, root: Path | None = None) -> ModelKind:
    """The adapter of the kind `source` holds (see `kind_name`), bound to `source` and the
    workspace `root` (None: the current folder)."""
    return kind_class(kind_name(source, root))(None if source is None else str(source), root)


__all__ = ["REGISTRY", "KindDefaults", "ModelKind", "hf_folder", "kind_class", "kind_name", "kind_of", "register"]
