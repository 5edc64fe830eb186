"""train_base on a Hugging Face language model: the source folder and its kind recorded,
not trained; and `load_base`, how every later stage opens it."""

from __future__ import annotations

from pathlib import Path

from kinds.language import LanguageKind
from modhifi_core.errors import InputError
from modhifi_core.safe_io import sha256_file
from modhifi_core.sources import check_folder
from tasks.records import read_record, record_source
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: LanguageKind) -> dict:
    """Record the source folder (path, kind, format, sha256 of its config, weight and
    tokenizer files) as the base artifact: the run's lineage starts at the open-weight files."""
    _, _, weights_format = check_folder(kind.input("model_source", params, ws.root))
    return record_source(ws, params, kind, weights_format=weights_format)


def load_base(ws: Workspace, kind: LanguageKind) -> object:
    """The source model (`LoadedModel` with its tokenizer, loaded as `kind`), refused when
    its files no longer hash as train_base recorded them."""
    record = read_record(ws.artifact("base_model"))
    loaded = kind.sibling(f"hf:{record['path']}").load()
    _check_unchanged(record, loaded.weights)
    return loaded


def base_folder(ws: Workspace) -> Path:
    """The source folder train_base recorded, refused (as `load_base`) when its weight
    files no longer hash as recorded; nothing loaded (the prune stage reads it layer by layer)."""
    record = read_record(ws.artifact("base_model"))
    folder = Path(record["path"])
    _check_unchanged(record, check_folder(folder)[1])
    return folder


def _check_unchanged(record: dict, weights: list[Path]) -> None:
    for weight in weights:
        if record["files"].get(weight.name) != sha256_file(weight):
            raise InputError(f"{weight} changed since train_base recorded it; run `modhifi run` again")
