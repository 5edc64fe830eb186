"""Stage unlearn of a zoo run: forget `unlearn.forget_class` (or a random fraction) from
the pruned checkpoint — prune-then-unlearn (`modhifi_core.operations.unlearn.unlearn_checkpoint`).

Data-free by default: the method sees only the synthesize stage's samples
(`unlearn.data: synthetic`); `real` uses the training split. The evidence — UA, RA,
TA, MIA-Efficacy on the real data, before and after — is stored with the checkpoint.
ModHiFi-U's statistics passes run on the Dask cluster when `cluster.address` is set.
"""

from __future__ import annotations

from modhifi_core.data import load_from_spec
from modhifi_core.metadata import read_metadata
from modhifi_core.operations.unlearn import unlearn_checkpoint
from modhifi_core.safe_io import atomic_write_json
from modhifi_core.synthesis import load_synthetic
from tasks.calibration import synthetic_parent
from tasks.cluster import open_executor
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: object) -> dict:
    source = kind.load(ws.artifact("pruned_model"))
    data = load_from_spec(read_metadata(source.metadata).data)
    settings = params.unlearn.model_dump()
    settings["forget_data"] = settings.pop("data")
    synthetic = settings["forget_data"] == "synthetic"
    samples = load_synthetic(ws.artifact("synthetic"), source.config.num_classes) if synthetic else None
    parents = synthetic_parent(ws, synthetic)
    with open_executor(params.cluster.address, params.cluster.workers) as executor:
        outcome = unlearn_checkpoint(
            source, data, **settings, samples=samples, seed=params.seed, parents=parents, executor=executor
        )
    kind.save(source, outcome.model, ws.artifact("unlearned_model"), outcome.metadata.to_dict(), outcome.extra)
    atomic_write_json(ws.artifact("unlearned_metrics"), outcome.metrics)
    return outcome.metrics
