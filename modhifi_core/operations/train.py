"""Operation `train`: a model of the zoo trained from scratch on a dataset."""

from __future__ import annotations

import torch

from modhifi_core.compute import place, requested
from modhifi_core.data import DatasetSplits, data_spec, load_from_spec
from modhifi_core.metadata import ModelMetadata
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.operations.evaluate import evaluate
from modhifi_core.operations.outcome import Outcome
from modhifi_core.training import TrainConfig, train_model


def train(
    config: ModelConfig,
    data: DatasetSplits,
    recipe: TrainConfig = TrainConfig(),
    spec: dict | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
) -> Outcome:
    """Build `config` (initialised with `recipe.seed`), train it on `data.train` with SGD
    and a cosine schedule, and evaluate it. `spec`: the data spec recorded in the
    metadata (how to reload `data`). Metrics: `test_accuracy`, `train_accuracy` (%),
    `per_class_accuracy`, `train_seconds`, `final_loss`. `device`/`dtype`: where it
    trains (`modhifi_core.compute`; None: float32 on the CPU); the model is float32."""
    torch.manual_seed(recipe.seed)
    model = place(build_model(config), requested(device, dtype))
    log = train_model(model, data.train, recipe)
    scores = evaluate(model, data)
    recipe_dict = vars(recipe)
    metadata = ModelMetadata("train", data=spec, params=recipe_dict, recipe=recipe_dict, metrics=scores)
    metrics = {**scores, "train_seconds": log["seconds"], "final_loss": log["final_loss"]}
    return Outcome(model, config, metadata, metrics)


# A dataset's own images: (px, channels); what `train_from_params` trains on unless told.
NATIVE_SHAPES = {"digits": (8, 1), "fashion-mnist": (28, 1), "cifar10": (32, 3)}


def train_from_params(
    *,
    dataset: str = "digits",
    image_size: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.2,
    data_dir: str | None = None,
    train_per_class: int | None = None,
    name: str = "resnet18",
    width: int = 16,
    epochs: int = TrainConfig.epochs,
    lr: float = TrainConfig.lr,
    batch_size: int = TrainConfig.batch_size,
    weight_decay: float = TrainConfig.weight_decay,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
) -> Outcome:
    """`train` as params.yaml (or `modhifi train`) describes it: architecture `name` of
    stem `width`, trained on `dataset` (from `data_dir` where it needs one) at
    `image_size` px and `channels` (None: the dataset's own, `NATIVE_SHAPES`), on
    `train_per_class` images per class (None: all); its train/test split (`test_fraction`)
    is fixed, seeded 0, so every training seed is tested alike. SGD with `epochs`, `lr`,
    `batch_size`, `weight_decay`, initialisation `seed`; on `device` in `dtype`."""
    native = NATIVE_SHAPES.get(dataset, (None, None))
    image_size = image_size if image_size is not None else native[0]
    channels = channels if channels is not None else native[1]
    spec = data_spec(dataset, image_size, channels, 0, test_fraction, data_dir, train_per_class)
    splits = load_from_spec(spec)
    config = ModelConfig(
        name=name, num_classes=splits.num_classes, in_channels=channels, width=width, image_size=image_size
    )
    settings = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed)
    return train(config, splits, settings, spec, device=device, dtype=dtype)
