"""`modhifi unlearn`: forget a class or a random fraction of the training set, optionally
after unstructured pruning (prune-then-unlearn), and report UA, RA, TA, MIA and RTE.

Every option is checked before any work; the checkpoint is written only after success
(atomically), so bad input leaves nothing on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from flows.console import emit

if TYPE_CHECKING:
    from modhifi_core.checkpoint import Checkpoint


def unlearn(
    model: Path = typer.Option(..., "--model", help="Checkpoint to unlearn from."),
    out: Path = typer.Option(..., "--out", help="Where to write the unlearned checkpoint (.pt)."),
    forget_class: int | None = typer.Option(None, "--forget-class", help="Forget every training sample of class K."),
    forget_random: float | None = typer.Option(
        None, "--forget-random", help="Forget a seeded random FRACTION of the training samples, in (0, 1)."
    ),
    method: str = typer.Option("modhifi", help="modhifi, retrain, ft, ga, rl, ff, iu or l1sparse."),
    prune: str | None = typer.Option(None, "--prune", help="Prune first (prune-then-unlearn): omp, imp or synflow."),
    sparsity: float | None = typer.Option(None, help="Fraction of prunable weights to zero, in [0, 1) (default 0.95)."),
    retrain_epochs: int | None = typer.Option(
        None, min=1, help="Pruning's retraining budget in epochs (default: the model's training recipe)."
    ),
    hyperparameter: list[str] = typer.Option(
        [], "--set", help="A method hyper-parameter KEY=VALUE (repeatable), e.g. --set fraction=0.1."
    ),
    forget_data: str = typer.Option(
        "synthetic",
        help="What ModHiFi-U scores the forget class on: synthetic (made from the model, data-free) or real. "
        "The baselines always use the real forget/retain split.",
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the random forget split and of pruning's initialisation."),
    data_dir: Path | None = typer.Option(None, help="Folder of the CIFAR-10 python batches."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Unlearn with ModHiFi-U or an Unlearn-Sparse baseline; report UA, RA, TA, MIA (%) and seconds."""
    from modhifi_core.errors import InputError
    from modhifi_core.unlearning import METHODS
    from modhifi_core.unstructured import PRUNERS
    from modhifi_core.unstructured.masks import check_sparsity

    if (forget_class is None) == (forget_random is None):
        raise InputError("give exactly one of --forget-class K or --forget-random FRACTION")
    if forget_random is not None and not 0.0 < forget_random < 1.0:
        raise InputError(f"--forget-random must be a fraction in (0, 1), got {forget_random}")
    if method not in METHODS:
        raise InputError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if forget_data not in ("synthetic", "real"):
        raise InputError(f"unknown --forget-data {forget_data!r}; choose synthetic or real")
    if prune is not None and prune not in PRUNERS:
        raise InputError(f"unknown --prune {prune!r}; choose one of {', '.join(PRUNERS)}")
    if sparsity is not None and prune is None:
        raise InputError("--sparsity needs --prune omp|imp|synflow")
    sparsity = check_sparsity(0.95 if sparsity is None else sparsity) if prune else None
    hyperparameters = parse_assignments(hyperparameter)

    from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
    from modhifi_core.data import data_spec, load_from_spec
    from modhifi_core.metrics import unlearning_metrics
    from modhifi_core.splits import class_split, random_split
    from modhifi_core.unlearning import unlearn as run_unlearning
    from modhifi_core.unstructured import Masks, prune_unstructured

    ckpt = load_checkpoint(model)
    spec = ckpt.metadata.get("data") or data_spec(image_size=ckpt.config.image_size, channels=ckpt.config.in_channels)
    data = load_from_spec(spec, data_dir=str(data_dir) if data_dir else None)
    if forget_class is not None:
        check_forget_class(forget_class, ckpt.config.num_classes)
        split = class_split(data.train, forget_class)
    else:
        split = random_split(data.train, forget_random, seed)
    recipe = training_recipe(ckpt)
    if method == "retrain":
        hyperparameters = {**recipe, **hyperparameters}

    network, masks, prune_seconds = ckpt.model, Masks.from_extra(ckpt.extra, ckpt.model), None
    if prune is not None:
        network, masks, prune_log = prune_unstructured(
            network,
            data.train,
            prune,
            sparsity,
            init_state=initial_state(ckpt, seed),
            retrain=retrain_config(recipe, retrain_epochs),
        )
        prune_seconds = prune_log["seconds"]
    data_free = method == "modhifi" and forget_class is not None and forget_data == "synthetic"
    if data_free and "forget_images" not in hyperparameters:
        from modhifi_core.synthesis import synthesize

        image_shape = (ckpt.config.in_channels, ckpt.config.image_size, ckpt.config.image_size)
        made = synthesize(network, SYNTHETIC_FORGET_SAMPLES, image_shape=image_shape, classes=[forget_class], seed=seed)
        hyperparameters["forget_images"] = made.samples.images
    result = run_unlearning(network, split, method, masks=masks, **hyperparameters)
    metrics = unlearning_metrics(result.model, split, data.test)
    forget = {"class": forget_class} if forget_class is not None else {"fraction": forget_random, "seed": seed}
    record = {
        "method": method,
        "hyperparameters": result.log["hyperparameters"],
        "forget": forget,
        "forget_data": "synthetic" if data_free else "real",
        "prune": prune,
        "sparsity": None if masks is None else masks.sparsity,
    }
    sha = save_checkpoint(
        out,
        result.model,
        ckpt.config,
        metadata={
            "stage": "unlearn",
            "data": spec,
            "parents": {"model": ckpt.sha256},
            "params": recipe,
            "unlearning": record,
            "metrics": {**metrics, "seconds": result.seconds},
        },
        extra=None if masks is None else masks.to_extra(),
    )
    emit(
        {
            **metrics,
            "seconds": result.seconds,
            "prune_seconds": prune_seconds,
            "method": method,
            "forget": split.describe(),
            "sparsity": record["sparsity"],
            "out": str(out),
            "sha256": sha,
        },
        as_json,
        title=f"unlearned {split.describe()} from {model} with {method}",
    )


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings as a dict; values parsed as YAML scalars (0.1, true, null, layer4.*)."""
    import yaml

    from modhifi_core.errors import InputError

    parsed = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parsed[key.strip()] = tuple(value) if isinstance(value, list) else value
    return parsed


# Synthetic forget-class samples ModHiFi-U scores on (the paper: <= 200 per class suffice).
SYNTHETIC_FORGET_SAMPLES = 100


def check_forget_class(forget_class: int, num_classes: int) -> None:
    """`InputError` unless the model has class `forget_class`."""
    from modhifi_core.errors import InputError

    if not 0 <= forget_class < num_classes:
        raise InputError(f"forget class {forget_class} does not exist: the model has classes 0..{num_classes - 1}")


def training_recipe(ckpt: Checkpoint) -> dict[str, Any]:
    """The training hyper-parameters Retrain takes, from the checkpoint's
    `metadata["params"]` when they describe training (a `modhifi train` or `modhifi
    unlearn` checkpoint); empty otherwise, and Retrain's defaults apply."""
    import dataclasses

    from modhifi_core.unlearning.retrain import RetrainParams

    if ckpt.metadata.get("stage", "train") not in ("train", "unlearn"):
        return {}
    fields = {f.name for f in dataclasses.fields(RetrainParams)}
    return {k: v for k, v in (ckpt.metadata.get("params") or {}).items() if k in fields}


def retrain_config(recipe: dict[str, Any], epochs: int | None) -> Any:
    """The pruning retraining budget: the training recipe, `epochs` overriding its length."""
    from modhifi_core.training import TrainConfig

    return TrainConfig(**{**recipe, **({"epochs": epochs} if epochs else {})})


def initial_state(ckpt: Checkpoint, seed: int) -> dict:
    """The rewinding point: the architecture freshly initialised with the training seed
    (the recipe's `seed`, else `seed`) — the model's own initialisation when it was
    trained by `modhifi train` (for a channel-pruned model, a fresh initialisation of
    its pruned shape)."""
    import torch

    from modhifi_core.models import build_model

    init_seed = (ckpt.metadata.get("params") or {}).get("seed", seed)
    torch.manual_seed(init_seed)
    return build_model(ckpt.config).state_dict()
