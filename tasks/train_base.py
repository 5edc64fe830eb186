"""Stage train_base: the model every later stage modifies.

With `model.path` set, the given checkpoint is loaded safely (weights_only) and copied
in; otherwise a model is trained on the configured dataset.
"""

from __future__ import annotations

import torch

from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
from modhifi_core.data import data_spec, load_from_spec
from modhifi_core.evaluation import evaluate_classifier
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.params import Params
from modhifi_core.safe_io import atomic_write_bytes, atomic_write_json
from modhifi_core.training import TrainConfig, train_model
from tasks.workspace import Workspace


def run(ws: Workspace, params: Params, mlflow_run: object = None) -> dict:
    out = ws.artifact("base_model")
    if params.model.path:
        ckpt = load_checkpoint(params.model.path)  # refuses unsafe or broken files
        spec = ckpt.metadata.get("data") or _spec(params)
        scores = evaluate_classifier(ckpt.model, load_from_spec(spec))
        atomic_write_bytes(out, ckpt.path.read_bytes())
        source = {"source": str(params.model.path), "source_sha256": ckpt.sha256}
    else:
        spec = _spec(params)
        data = load_from_spec(spec)
        config = ModelConfig(
            name=params.model.name,
            num_classes=data.num_classes,
            in_channels=params.data.channels,
            width=params.model.width,
            image_size=params.data.image_size,
        )
        train_config = TrainConfig(
            epochs=params.train.epochs,
            lr=params.train.lr,
            batch_size=params.train.batch_size,
            weight_decay=params.train.weight_decay,
            seed=params.seed,
        )
        torch.manual_seed(params.seed)
        model = build_model(config)
        log = train_model(model, data.train, train_config)
        scores = evaluate_classifier(model, data)
        save_checkpoint(
            out,
            model,
            config,
            metadata={"stage": "train_base", "data": spec, "params": vars(train_config), "metrics": scores},
        )
        source = {"train_seconds": log["seconds"]}
    metrics = {"test_accuracy": scores["test_accuracy"], "train_accuracy": scores["train_accuracy"], **source}
    atomic_write_json(ws.artifact("base_metrics"), metrics)
    return metrics


def _spec(params: Params) -> dict:
    d = params.data
    return data_spec(d.dataset, d.image_size, d.channels, params.seed, d.test_fraction, d.data_dir)
