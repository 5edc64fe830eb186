"""The external inputs of an open-weight model's run as DVC deps.

The model folder (`model.source: hf:DIR`), the weights of a torchvision/timm network
(`model.weights`, a file or a folder modhifi wrote) and the texts (`language.calibration:
text:PATH`, `language.eval_text`) lie outside the workspace, and dvc.yaml is static (DVC
interpolates `${...}` into a string, not into a list of deps, and a dep must exist in a
zoo run too). So `modhifi run` writes each input's content hashes to a fixed file under
`inputs/` before DVC decides what changed (`refresh_inputs`); dvc.yaml lists those files
as deps of the stages that read the inputs, so an edited text or a new weight file re-runs
them. A stage reading an input checks that it still hashes as recorded (`checked_input`).
In a zoo run (or an input not used) the file records `{"path": null}`.

`check_model_fits` refuses, before anything runs, params that cannot work on the folder's
kind of model (`modhifi_core.sources.model_kind`, the one detector): for a language model
what its adapter's `check_run` refuses (`kinds.language`); for an image classifier a
forget set other than one of its classes; for `torchvision:ARCH` / `timm:ARCH` a library
that does not import in this venv or an architecture it does not have.
"""

from __future__ import annotations

import json
from pathlib import Path

from modhifi_core.errors import InputError
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_write_json, sha256_file
from tasks.workspace import Workspace

INPUTS = {
    "model_source": "inputs/model-source.json",
    "calibration_text": "inputs/calibration-text.json",
    "eval_text": "inputs/eval-text.json",
}


def input_path(ws: Workspace, params: Params, name: str) -> Path | None:
    """The path of external input `name` the params name (None when unused), resolved
    against the workspace root. Reads only the keys that input needs (a stage sees only
    the params it declares)."""
    source = params.model.source
    if source is None:
        return None
    if name == "model_source":
        path = params.model.weights if is_zoo_source(source) else source.removeprefix("hf:")
    elif name == "calibration_text":
        calibration = params.language.calibration
        path = calibration.removeprefix("text:") if calibration != "self" else None
    else:
        path = params.language.eval_text
    return ws.root / Path(path).expanduser() if path else None


def digest(name: str, path: Path | None) -> dict:
    """`{"path", "files": {relative path: sha256}}` of a file or folder (every file under a
    text folder; a model folder's config, weight and tokenizer files; a zoo weights file,
    or the weights and rebuild record of a folder modhifi wrote)."""
    if path is None:
        return {"path": None}
    if name == "model_source":
        files = _model_files(path)
    else:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    base = path if path.is_dir() else path.parent
    return {"path": str(path), "files": {f.relative_to(base).as_posix(): sha256_file(f) for f in files}}


def _model_files(path: Path) -> list[Path]:
    from modhifi_core.sources.huggingface import TOKENIZER_FILES, check_folder
    from modhifi_core.sources.torchvision_zoo import RECORD_FILE, WEIGHTS_FILE

    if path.is_file():  # a torchvision/timm weights file
        return [path]
    if (path / RECORD_FILE).is_file():  # a torchvision/timm folder save_zoo_model wrote
        return [path / WEIGHTS_FILE, path / RECORD_FILE]
    _, weights, _ = check_folder(path)
    extra = [path / name for name in ("config.json", *TOKENIZER_FILES) if (path / name).is_file()]
    return sorted({*weights, *extra})


FORGET_A_CLASS = "unlearn.forget_random: an image classifier forgets a class; give unlearn.forget_class"
IMAGE_KEYS = ("forget",)  # unlearn.forget_class / forget_random, for an image classifier


def check_model_fits(ws: Workspace, params: Params, keys: tuple[str, ...] = IMAGE_KEYS) -> str | None:
    """The kind of the model `model.source` names (`causal-lm`, `encoder` or
    `image-classification`; None in a zoo run), checked against the params. One InputError
    line for: a language section its model cannot run (`kinds.language`'s `check_run`, at
    run start), an image classifier told to forget a random fraction or a class it does not
    have (`forget` among `keys`: a stage passes it when it declares the unlearn section); a
    torchvision/timm source whose library does not import here or has no such architecture
    (`check_source`; its classes are checked by the operations)."""
    if is_zoo_source(params.model.source):
        from modhifi_core.sources.torchvision_zoo import check_source

        check_source(params.model.source)
        if "forget" in keys and params.unlearn.forget_class is None:
            raise InputError(FORGET_A_CLASS)
        return "image-classification"
    folder = input_path(ws, params, "model_source")
    if folder is None:
        return None
    from modhifi_core.sources import model_kind

    kind = model_kind(folder)
    if kind == "image-classification":
        if "forget" in keys:
            _check_forget_set(folder, params)
        return kind
    from kinds import kind_of

    kind_of(params.model.source, ws.root).check_run(params, ws.root)
    return kind


def _check_forget_set(folder: Path, params: Params) -> None:
    """An image classifier forgets one of its own classes (its config.json's `id2label`)."""
    u = params.unlearn
    if u.forget_class is None:
        raise InputError(FORGET_A_CLASS)
    config = json.loads((folder / "config.json").read_text())
    classes = len(config.get("id2label") or {}) or int(config.get("num_labels") or 0)
    if classes and u.forget_class >= classes:
        raise InputError(
            f"unlearn.forget_class: {u.forget_class} is not a class of {folder} (it has {classes}: 0-{classes - 1})"
        )


def is_zoo_source(source: str | None) -> bool:
    """Whether `model.source` names a torchvision/timm architecture (`weights` then holds the model)."""
    from modhifi_core.vision.sources import is_image_source

    return source is not None and is_image_source(source)


def refresh_inputs(ws: Workspace, params: Params) -> None:
    """Check that the params fit the model (`check_model_fits`), then write
    each input's digest to its `inputs/` file (rewritten only when it changed)."""
    check_model_fits(ws, params)
    for name, file in INPUTS.items():
        target = ws.root / file
        record = digest(name, input_path(ws, params, name))
        if not target.is_file() or json.loads(target.read_text()) != record:
            atomic_write_json(target, record)


def checked_input(ws: Workspace, params: Params, name: str) -> dict:
    """The digest of input `name` now; InputError when it differs from what `inputs/`
    records (the input changed after `modhifi run` hashed it). Without a record (a stage
    run alone) it is written now."""
    record = digest(name, input_path(ws, params, name))
    target = ws.root / INPUTS[name]
    if not target.is_file():
        atomic_write_json(target, record)
    elif json.loads(target.read_text()) != record:
        raise InputError(f"{record['path']} changed after {INPUTS[name]} recorded it; run `modhifi run` again")
    return record
