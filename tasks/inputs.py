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
kind of model (`modhifi_core.sources.model_kind`, the one detector): an encoder calibrated
by self-sampling, sequences longer than the model's positions. A kind whose adapter has
moved into `kinds/` (the image classifiers) is asked instead: `kind.check_run`,
`kind.inputs`, `kind.source_files`.
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
    kind = _adapter(ws.root, source)
    if name == "model_source" and kind is not None:
        return kind.inputs(params, ws.root).get("model_source")
    if name == "model_source":
        path = source.removeprefix("hf:")
    elif name == "calibration_text":
        calibration = params.language.calibration
        path = calibration.removeprefix("text:") if calibration != "self" else None
    else:
        path = params.language.eval_text
    return ws.root / Path(path).expanduser() if path else None


def _adapter(root: Path, source: str | None) -> object | None:
    """The kind adapter of `source` (`kinds.kind_of`). TRANSITIONAL while the kinds move
    in: None for a kind whose adapter is not there yet (its checks are below)."""
    import kinds

    try:
        return kinds.kind_of(source, root)
    except (ImportError, AttributeError):
        return None


def digest(name: str, path: Path | None, kind: object | None = None) -> dict:
    """`{"path", "files": {relative path: sha256}}` of a file or folder (every file under a
    text folder; a model folder's config, weight and tokenizer files; a zoo weights file,
    or the weights and rebuild record of a folder modhifi wrote)."""
    if path is None:
        return {"path": None}
    if name == "model_source":
        files = kind.source_files(path) if kind is not None else _model_files(path)
    else:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    base = path if path.is_dir() else path.parent
    return {"path": str(path), "files": {f.relative_to(base).as_posix(): sha256_file(f) for f in files}}


def _model_files(path: Path) -> list[Path]:
    from modhifi_core.sources.huggingface import TOKENIZER_FILES, check_folder

    _, weights, _ = check_folder(path)
    extra = [path / name for name in ("config.json", *TOKENIZER_FILES) if (path / name).is_file()]
    return sorted({*weights, *extra})


LANGUAGE_KEYS = ("calibration", "length", "eval_samples")  # what check_model_fits can check


def check_model_fits(ws: Workspace, params: Params, keys: tuple[str, ...] = LANGUAGE_KEYS) -> str | None:
    """The kind of the model `model.source` names (`causal-lm` or `encoder`; None in a zoo
    run), with the keys among `keys` checked against it (a stage passes the ones it
    declares). One InputError line for: an encoder with `calibration: self` (only a causal LM
    samples text) or with `eval_samples` too few for its top-k neighbour agreement, a
    `length` beyond the model's `max_position_embeddings` (refused, not clipped: what runs
    is what params.yaml says)."""
    folder = input_path(ws, params, "model_source")
    if folder is None:
        return None
    from modhifi_core.sources import model_kind, position_limit
    from tasks.lm import NEIGHBOURS

    kind = model_kind(folder)
    lang = {key: getattr(params.language, key) for key in keys if key in LANGUAGE_KEYS}  # only those declared
    if kind == "encoder" and lang.get("calibration") == "self":
        raise InputError(
            f"language.calibration: self samples text from the model, which an encoder ({folder}) cannot do; "
            "give text:PATH (a file or folder of real text)"
        )
    if kind == "encoder" and lang.get("eval_samples", NEIGHBOURS + 1) <= NEIGHBOURS:
        raise InputError(
            f"language.eval_samples: an encoder is evaluated by top-{NEIGHBOURS} neighbour agreement over the "
            f"held-out sentences, which needs more than {NEIGHBOURS}; got {lang['eval_samples']}"
        )
    limit = position_limit(folder)
    if limit is not None and lang.get("length", 0) > limit:
        raise InputError(
            f"language.length: {lang['length']} tokens exceed the {limit} positions of {folder} "
            f"(max_position_embeddings in its config.json); give at most {limit}"
        )
    return kind


def refresh_inputs(ws: Workspace, params: Params) -> None:
    """Check that the params fit the model (`kind.check_run`, else `check_model_fits`),
    then write each input's digest to its `inputs/` file (rewritten only when it changed)."""
    kind = _adapter(ws.root, params.model.source)
    if kind is not None and hasattr(kind, "check_run"):
        kind.check_run(params, ws.root)
    else:
        check_model_fits(ws, params)
    for name, file in INPUTS.items():
        target = ws.root / file
        record = digest(name, input_path(ws, params, name), kind)
        if not target.is_file() or json.loads(target.read_text()) != record:
            atomic_write_json(target, record)


def checked_input(ws: Workspace, params: Params, name: str) -> dict:
    """The digest of input `name` now; InputError when it differs from what `inputs/`
    records (the input changed after `modhifi run` hashed it). Without a record (a stage
    run alone) it is written now."""
    record = digest(name, input_path(ws, params, name), _adapter(ws.root, params.model.source))
    target = ws.root / INPUTS[name]
    if not target.is_file():
        atomic_write_json(target, record)
    elif json.loads(target.read_text()) != record:
        raise InputError(f"{record['path']} changed after {INPUTS[name]} recorded it; run `modhifi run` again")
    return record
