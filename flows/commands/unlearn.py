"""`modhifi unlearn`: forget a class or a random fraction of the training set, optionally
after unstructured pruning (prune-then-unlearn), and report UA, RA, TA, MIA and RTE — an
adapter over `modhifi_core.operations.unlearn_checkpoint`.

Every option is checked before any work; the checkpoint is written only after success
(atomically), so bad input leaves nothing on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flows.commands.loading import check_output
from flows.console import emit


def unlearn(
    model: Path = typer.Option(
        ..., "--model", help="Checkpoint to unlearn from, hf:DIR (an image classifier), torchvision:ARCH or timm:ARCH."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the unlearned checkpoint (.pt; a folder otherwise)."),
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
    forget_data: str | None = typer.Option(
        None,
        help="What the method sees: synthetic (samples made from the model: data-free; the default for "
        "--forget-class) or real (the training split; the only choice for --forget-random).",
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the random forget split, synthesis and pruning's initialisation."),
    data_dir: Path | None = typer.Option(None, help="Folder of the CIFAR-10 python batches."),
    data: str | None = typer.Option(None, help="Image model: dataset (digits, fashion-mnist, cifar10) or folder."),
    weights: Path | None = typer.Option(None, help="torchvision/timm: weights file (or a folder modhifi wrote)."),
    num_classes: int | None = typer.Option(None, min=1, help="torchvision/timm: the constructor's num_classes."),
    image_size: int | None = typer.Option(None, min=1, help="Image model: input size (default: its config's, or 224)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Unlearn with ModHiFi-U or an Unlearn-Sparse baseline; report UA, RA, TA, MIA (%) and seconds.
    An image classifier (hf:DIR, torchvision:ARCH --weights FILE) forgets --forget-class,
    measured on --data, and is written back in its source's format."""
    from flows.commands.loading import is_image_model
    from modhifi_core.errors import InputError
    from modhifi_core.params import UnlearnParams

    if str(model).startswith("hf:") or is_image_model(str(model)):  # hf:DIR other than images: refused on load
        if forget_random is not None or prune is not None:
            raise InputError(
                "an image classifier forgets a class (--forget-class); --forget-random/--prune need a checkpoint"
            )
        if forget_class is None:
            raise InputError("give --forget-class K (the class to forget)")
        check_output(out, overwrite, folder=True)
        image = dict(weights=weights, num_classes=num_classes, image_size=image_size, data=data, data_dir=data_dir)
        options = dict(method=method, forget_data=forget_data or "synthetic", seed=seed)
        options["hyperparameters"] = parse_assignments(hyperparameter)
        return unlearn_image(str(model), out, forget_class, image, options, as_json)

    if sparsity is not None and prune is None:
        raise InputError("--sparsity needs --prune omp|imp|synflow")
    data = forget_data or ("real" if forget_random is not None else "synthetic")
    settings = UnlearnParams(
        forget_class=forget_class,
        forget_random=forget_random,
        method=method,
        data=data,
        hyperparameters=parse_assignments(hyperparameter),
        prune=prune,
        sparsity=0.95 if sparsity is None else sparsity,
        retrain_epochs=retrain_epochs,
    )
    check_output(out, overwrite)

    from flows.commands.loading import load_model_and_data
    from modhifi_core.operations.unlearn import unlearn_checkpoint

    ckpt, splits = load_model_and_data(model, data_dir=data_dir)
    outcome = unlearn_checkpoint(ckpt, splits, settings, seed=seed)
    sha = outcome.save(out)
    emit({**outcome.metrics, "out": str(out), "sha256": sha}, as_json, f"unlearned from {model} with {method}")


def unlearn_image(source: str, out: Path, forget_class: int, image: dict, options: dict, as_json: bool) -> None:
    """`modhifi unlearn --model hf:DIR | torchvision:ARCH --forget-class K --data D`: an
    adapter over `unlearn_image_classifier`."""
    from flows.commands.loading import load_image_data
    from modhifi_core.errors import InputError
    from modhifi_core.metadata import modification_record
    from modhifi_core.operations.unlearn_image_classifier import unlearn_image_classifier
    from modhifi_core.vision.sources import input_shape, load_image_model, save_image_model

    if image["data"] is None:
        raise InputError(f"{source} is an image classifier: give --data (the real data the evidence is measured on)")
    loaded = load_image_model(source, image["weights"], image["num_classes"])
    data = load_image_data(image["data"], input_shape(loaded, image["image_size"]), image["data_dir"])
    result = unlearn_image_classifier(loaded.model, data, forget_class, **options)
    params = {**options, "forget_class": forget_class, "data": image["data"], "log": result.log}
    lineage = modification_record("unlearn", {"model": loaded.weights}, params, result.metrics)
    folder = save_image_model(result.model, loaded, out, lineage)
    emit({**result.metrics, "out": str(folder)}, as_json, f"unlearned class {forget_class} from {source}")


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
        if isinstance(value, (list, dict)):
            raise InputError(f"--set {key.strip()}: give one value (a number, true/false, null or a name), got {raw!r}")
        parsed[key.strip()] = value
    return parsed
