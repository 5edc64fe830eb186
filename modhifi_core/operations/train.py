"""Operation `train`: a model of the zoo trained from scratch on a dataset."""

from __future__ import annotations

import torch

from modhifi_core.data import DatasetSplits, data_spec, load_from_spec
from modhifi_core.metadata import ModelMetadata
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.operations.evaluate import evaluate
from modhifi_core.operations.outcome import Outcome
from modhifi_core.training import TrainConfig, train_model
from tasks.params import DataParams, ModelParams, TrainParams


def train(
    config: ModelConfig, data: DatasetSplits, recipe: TrainConfig = TrainConfig(), spec: dict | None = None
) -> Outcome:
    """Build `config` (initialised with `recipe.seed`), train it on `data.train` with SGD
    and a cosine schedule, and evaluate it. `spec`: the data spec recorded in the
    metadata (how to reload `data`). Metrics: `test_accuracy`, `train_accuracy` (%),
    `per_class_accuracy`, `train_seconds`, `final_loss`."""
    torch.manual_seed(recipe.seed)
    model = build_model(config)
    log = train_model(model, data.train, recipe)
    scores = evaluate(model, data)
    recipe_dict = vars(recipe)
    metadata = ModelMetadata("train", data=spec, params=recipe_dict, recipe=recipe_dict, metrics=scores)
    metrics = {**scores, "train_seconds": log["seconds"], "final_loss": log["final_loss"]}
    return Outcome(model, config, metadata, metrics)


def train_from_params(data: DataParams, model: ModelParams, recipe: TrainParams, seed: int = 0) -> Outcome:
    """`train` as params.yaml (or `modhifi train`) describes it: the dataset of `data`
    (its train/test split is fixed, seeded 0, so every training seed is tested alike),
    the architecture of `model`, the recipe of `recipe` with initialisation `seed`."""
    spec = data_spec(
        data.dataset, data.image_size, data.channels, 0, data.test_fraction, data.data_dir, data.train_per_class
    )
    splits = load_from_spec(spec)
    config = ModelConfig(
        name=model.name,
        num_classes=splits.num_classes,
        in_channels=data.channels,
        width=model.width,
        image_size=data.image_size,
    )
    settings = TrainConfig(
        epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size, weight_decay=recipe.weight_decay, seed=seed
    )
    return train(config, splits, settings, spec)
