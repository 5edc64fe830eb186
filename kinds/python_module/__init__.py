"""A user's own PyTorch module: `python:PACKAGE.MODULE:FACTORY` + weights + input shape.

    kind = kind_of("python:mynets.cnn:build")
    loaded = kind.load(weights="cnn.safetensors", input_shape="3,16,16")
    kind.save(loaded, pruned, "out/", lineage={...})   # model.safetensors + rebuild.json + modhifi.json
    again = kind.load(weights="out/")                  # factory() -> recorded shapes -> strict load

The factory is the user's own code, imported like any module (`importlib.import_module`
with the workspace root / the current folder on `sys.path`), called with no arguments; it
must return an `nn.Module`. Code inside a model or weights folder is never imported.
Weights: a `.safetensors` file or a state dict read with `torch.load(weights_only=True)`,
loaded strictly; or a folder this kind wrote: `model.safetensors` + `rebuild.json` (the
source, the input shape and the shape record of the pruned layers,
`modhifi_core.sources.rebuild`) + `modhifi.json` (lineage), written atomically.

Everything else (the pipeline, the commands, the defaults) is the image classifiers'
(`kinds.image.ImageClassifierKind`): this module is the whole of the kind.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from kinds.base import StageSpec
from kinds.image import ImageClassifierKind, LoadedImage
from modhifi_core.errors import InputError
from modhifi_core.sources.rebuild import RECORD_FILE, WEIGHTS_FILE

SOURCE = re.compile(r"python:((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*):([A-Za-z_]\w*)")
RECORD_FORMAT = "modhifi-python-v1"


def parse_shape(value: Any) -> tuple[int, int, int]:
    """`"3,16,16"` or `[3, 16, 16]` -> `(3, 16, 16)`: C, H, W of one input."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"--input-shape must be C,H,W (three positive integers, e.g. 3,16,16), got {value!r}")
    return shape


class PythonModuleKind(ImageClassifierKind):
    """`python:PACKAGE.MODULE:FACTORY`: a user's own image classifier."""

    name: ClassVar[str] = "python"
    source_options: ClassVar[tuple[str, ...]] = ("weights", "input_shape")
    model_keys: ClassVar[tuple[str, ...]] = ("source", *source_options)
    # train_base also reads the user's code, so an edited module re-runs the pipeline
    stages: ClassVar[dict[str, StageSpec]] = {
        **ImageClassifierKind.stages,
        "train_base": replace(ImageClassifierKind.stages["train_base"], reads=("model_source", "model_code")),
    }

    # ------------------------------------------------------------------ the factory
    def parts(self) -> tuple[str, str]:
        """(module, factory) of the source; a malformed source is one line."""
        match = SOURCE.fullmatch(str(self.source))
        if match is None:
            raise InputError(f"model source {self.source!r} is not python:PACKAGE.MODULE:FACTORY")
        return match.group(1), match.group(2)

    def build(self, weights: Path | None = None) -> nn.Module:
        """A fresh model from the factory (the user's module, imported with the workspace
        root or the current folder on sys.path; never from inside `weights`' folder)."""
        module_name, factory_name = self.parts()
        root = str(Path(self.root or os.getcwd()).resolve())
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - the user's code: any error is a refusal
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"model source {self.source}: module {module_name} does not import: {first}") from None
        where = Path(getattr(module, "__file__", None) or "").resolve()
        if weights is not None and Path(weights).is_dir() and Path(weights).resolve() in where.parents:
            raise InputError(f"model source {self.source}: {where} lies inside the weights folder {weights}")
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise InputError(f"model source {self.source}: module {module_name} has no factory {factory_name}")
        try:
            model = factory()
        except Exception as exc:  # noqa: BLE001 - the user's code
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"model source {self.source}: {factory_name}() failed: {first}") from None
        if not isinstance(model, nn.Module):
            raise InputError(
                f"model source {self.source}: {factory_name}() returned a {type(model).__name__}, not a torch nn.Module"
            )
        return model

    def code(self) -> Path | None:
        """Where the user's code lies: the module's top-level package folder, or the
        module file itself (looked for under the workspace root or the current folder,
        then sys.path; None when it is nowhere: importing it is refused in one line)."""
        module_name, _ = self.parts()
        top = module_name.split(".")[0]
        root = Path(self.root or os.getcwd()).resolve()
        for base in (root, *(Path(p) for p in sys.path if p)):
            for candidate in (base / top, base / f"{top}.py"):
                if candidate.exists():
                    return candidate
        return None

    def inputs(self, params: Any, root: Path) -> dict[str, Path | None]:
        """The weights file (or folder) and the user's code."""
        self.root = root
        return {**super().inputs(params, root), "model_code": self.code()}

    def record_extra(self, ws: Any, params: Any) -> dict:
        """The sha256 of the user's code in the base record: an edited factory changes the
        base artifact, and every stage after it re-runs."""
        from tasks.inputs import checked_input

        return {"code": checked_input(ws, params, "model_code", self)}

    # ------------------------------------------------------------------ the model
    def check(self, *, weights: str | Path | None = None, input_shape: Any = None, **options: Any) -> None:
        """A well-formed source, weights given and existing, an input shape (from the
        options, or the rebuild record of a folder this kind wrote)."""
        self.parts()
        if weights is None:
            raise InputError(f"{self.source} needs --weights FILE (safetensors or a state dict)")
        if not Path(weights).exists():
            raise InputError(f"weights {weights} does not exist")
        if input_shape is not None:
            parse_shape(input_shape)
        elif not Path(weights).is_dir():
            raise InputError(f"{self.source} needs --input-shape C,H,W (the shape of one input, e.g. 3,16,16)")

    def load(self, *, device: str = "cpu", weights: str | Path | None = None, input_shape: Any = None) -> LoadedImage:
        """factory() (resized to the recorded shapes for a folder this kind wrote) with the
        weights loaded strictly; a key or shape that does not fit is one line naming it."""
        from modhifi_core.safe_io import sha256_file
        from modhifi_core.sources.rebuild import apply_shape_record
        from modhifi_core.sources.torchvision_zoo import read_state_dict

        self.check(weights=weights, input_shape=input_shape)
        weights = Path(weights)
        shapes: dict = {}
        if weights.is_dir():
            record = self._record(weights)
            recorded = tuple(record["input_shape"])
            if input_shape is not None and parse_shape(input_shape) != recorded:
                raise InputError(
                    f"--input-shape {','.join(map(str, parse_shape(input_shape)))}: the model in {weights} takes "
                    f"{','.join(map(str, recorded))} (its {RECORD_FILE}); "
                    "leave --input-shape out for a folder modhifi wrote"
                )
            shape, shapes, file = recorded, record.get("layer_shapes") or {}, weights / WEIGHTS_FILE
        else:
            shape, file = parse_shape(input_shape), weights
        model = self.build(weights)
        if shapes:
            apply_shape_record(model, shapes)
        state = read_state_dict(file)
        _load_strict(model, state, file, str(self.source))
        return LoadedImage(model.to(device).eval(), {file.name: sha256_file(file)}, shape)

    def _record(self, folder: Path) -> dict:
        try:
            record = json.loads((folder / RECORD_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            raise InputError(f"--weights {folder} is a folder without a readable {RECORD_FILE}") from None
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            raise InputError(f"{folder / RECORD_FILE} is not a {RECORD_FORMAT} record")
        if record.get("source") != self.source:
            raise InputError(f"--weights {folder} holds a {record.get('source')} model, not {self.source}")
        parse_shape(record.get("input_shape"))
        return record

    def save(self, loaded: LoadedImage, model: nn.Module, out: str | Path, lineage: dict) -> Path:
        """`out/model.safetensors` + `rebuild.json` (source, input shape, the layers whose
        shapes differ from a fresh factory() build) + `modhifi.json`; the folder replaces an
        existing one only once complete."""
        from modhifi_core.sources.rebuild import save_rebuild_folder

        record = {"format": RECORD_FORMAT, "source": self.source, "input_shape": list(loaded.input_shape)}
        return save_rebuild_folder(model, self.build(), out, record, lineage)

    def open(self, folder: Path, input_shape: tuple[int, int, int]) -> LoadedImage:
        return self.load(weights=folder, input_shape=input_shape)

    def model_options(self, params: Any, root: Path) -> dict:
        self.root = root
        shape = getattr(params.model, "input_shape", None)
        return {"weights": self.inputs(params, root)["model_source"], "input_shape": shape}

    def source_files(self, path: Path) -> list[Path]:
        return [path] if path.is_file() else [path / WEIGHTS_FILE, path / RECORD_FILE]

    def check_run(self, params: Any, root: Path) -> None:
        """Also: the source, the weights and the input shape; the factory importing from
        the workspace and building an nn.Module."""
        super().check_run(params, root)
        options = self.model_options(params, root)
        self.check(**options)
        self.build(options["weights"])


def _load_strict(model: nn.Module, state: dict, file: Path, source: str) -> None:
    """`load_state_dict(strict=True)`, with the first missing or unexpected key (or shape
    that differs) named in one line."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise InputError(f"{file} does not fit {source}: missing key {missing[0]!r} ({len(missing)} missing)")
    if unexpected:
        raise InputError(
            f"{file} does not fit {source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise InputError(
                f"{file} does not fit {source}: {key!r} has shape {tuple(tensor.shape)} in the file, "
                f"{tuple(expected[key].shape)} in the model"
            )
    model.load_state_dict(state, strict=True)
