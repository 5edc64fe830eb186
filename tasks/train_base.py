"""Stage train_base: the model every later stage modifies (`modhifi_core.operations.train`).

With `model.path` set, the given checkpoint is loaded safely (weights_only), evaluated
and copied in; otherwise a model is trained on the configured dataset. An open-weight
model (`model.source`) is recorded, not trained: a torchvision/timm network by
`tasks.image.base`, a Hugging Face image classifier by `tasks.records.record_hf_source` (a
language model runs `kinds.language.train_base`).
"""

from __future__ import annotations

from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import data_spec, load_from_spec
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.evaluate import evaluate
from modhifi_core.operations.train import train_from_params
from modhifi_core.safe_io import atomic_write_bytes, atomic_write_json
from tasks.image import base as image_stage
from tasks.inputs import check_model_fits, is_zoo_source
from tasks.params import Params
from tasks.records import record_hf_source
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params) -> dict:
    if is_zoo_source(params.model.source):
        return image_stage.run(ws, params)
    if params.model.source is not None:
        return record_hf_source(ws, params, check_model_fits(ws, params, keys=()))
    out = ws.artifact("base_model")
    d = params.data
    if params.model.path:
        ckpt = load_checkpoint(params.model.path)  # refuses unsafe or broken files
        spec = read_metadata(ckpt.metadata).data or data_spec(
            d.dataset, d.image_size, d.channels, 0, d.test_fraction, d.data_dir, d.train_per_class
        )
        metrics = evaluate(ckpt.model, load_from_spec(spec))
        atomic_write_bytes(out, ckpt.path.read_bytes())
        metrics.update(source=str(params.model.path), source_sha256=ckpt.sha256)
    else:
        outcome = train_from_params(d, params.model, params.train, params.seed)
        outcome.save(out)
        metrics = outcome.metrics
    atomic_write_json(ws.artifact("base_metrics"), metrics)
    return metrics
