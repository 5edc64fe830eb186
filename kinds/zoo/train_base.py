"""Stage train_base of a zoo run: the model every later stage modifies.

With `model.path` set, the given checkpoint is loaded safely (weights_only), evaluated
and copied in; otherwise a model is trained on the configured dataset
(`modhifi_core.operations.train.train_from_params`).
"""

from __future__ import annotations

from pathlib import Path

from modhifi_core.data import data_spec, load_from_spec
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.evaluate import evaluate
from modhifi_core.operations.train import train_from_params
from modhifi_core.safe_io import atomic_write_bytes, atomic_write_json
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: object) -> dict:
    out = ws.artifact("base_model")
    d = params.data
    if params.model.path:
        ckpt = kind.load(ws.root / Path(params.model.path).expanduser())  # refuses unsafe or broken files
        spec = read_metadata(ckpt.metadata).data or data_spec(
            d.dataset, d.image_size, d.channels, 0, d.test_fraction, d.data_dir, d.train_per_class
        )
        metrics = evaluate(ckpt.model, load_from_spec(spec))
        atomic_write_bytes(out, ckpt.path.read_bytes())
        metrics.update(source=str(params.model.path), source_sha256=ckpt.sha256)
    else:
        m = params.model
        recipe = params.train.model_dump()
        compute = kind.compute_keywords()
        outcome = train_from_params(**d.model_dump(), name=m.name, width=m.width, **recipe, seed=params.seed, **compute)
        kind.save(outcome, outcome.model, out, outcome.metadata.to_dict(), outcome.extra)
        metrics = outcome.metrics
    atomic_write_json(ws.artifact("base_metrics"), metrics)
    return metrics
