"""train_base on a Hugging Face language model: the source folder and its kind recorded,
not trained; and `load_base`, how every later stage opens it."""

from __future__ import annotations

from modhifi_core.errors import InputError
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_torch_save, atomic_write_json, sha256_file
from modhifi_core.sources import check_folder, load_hf
from tasks.inputs import check_model_fits, checked_input
from tasks.lm import read_record
from tasks.workspace import Workspace

TRAIN_REASON = "an open-weight model is not trained here: the stage records its files' sha256"


def run(ws: Workspace, params: Params) -> dict:
    """Record the source folder (path, kind, format, sha256 of its config, weight and
    tokenizer files) as the base artifact: the run's lineage starts at the open-weight files."""
    kind = check_model_fits(ws, params, keys=())
    source = checked_input(ws, params, "model_source")
    _, weights, weights_format = check_folder(source["path"])
    record = {"record": "hf-source", "kind": kind, "weights_format": weights_format, **source}
    atomic_torch_save(ws.artifact("base_model"), record)
    metrics = {"skipped": TRAIN_REASON, "kind": kind, "weights_format": weights_format, **source}
    atomic_write_json(ws.artifact("base_metrics"), metrics)
    return metrics


def load_base(ws: Workspace) -> object:
    """The source model (`LoadedModel` of the kind train_base recorded, with its tokenizer),
    refused when its files no longer hash as train_base recorded them."""
    record = read_record(ws.artifact("base_model"))
    loaded = load_hf(record["path"], kind=record["kind"], need_tokenizer=True)
    for weight in loaded.weights:
        if record["files"].get(weight.name) != sha256_file(weight):
            raise InputError(f"{weight} changed since train_base recorded it; run `modhifi run` again")
    return loaded
