"""`modhifi unlearn`: forget a class (or a random fraction of the training set, optionally
after unstructured pruning: prune-then-unlearn) and report UA, RA, TA, MIA and RTE — the
`--model`'s kind runs it (`flows.commands.dispatch`). Every option is checked before any
work; the model is written only after success (atomically), so bad input leaves nothing
on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from flows.commands.dispatch import DEVICE, DTYPE, run_command


def unlearn(
    model: str = typer.Option(
        ..., "--model", help="FILE.pt, hf:DIR (an image classifier), torchvision:ARCH, timm:ARCH or python:..."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the unlearned checkpoint (.pt; a folder otherwise)."),
    forget_class: int | None = typer.Option(None, "--forget-class", help="Forget every training sample of class K."),
    forget_random: float | None = typer.Option(
        None, "--forget-random", help="Forget a seeded random FRACTION of the training samples, in (0, 1)."
    ),
    method: str | None = typer.Option(None, help="modhifi (default), retrain, ft, ga, rl, ff, iu or l1sparse."),
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
    weights: Path | None = typer.Option(
        None, help="torchvision/timm/python: weights file (or a folder modhifi wrote)."
    ),
    num_classes: int | None = typer.Option(None, min=1, help="torchvision/timm: the constructor's num_classes."),
    input_shape: str | None = typer.Option(None, help="python: C,H,W of one input, e.g. 3,16,16."),
    image_size: int | None = typer.Option(None, min=1, help="Image model: input size (default: its config's, or 224)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Unlearn with ModHiFi-U or an Unlearn-Sparse baseline; report UA, RA, TA, MIA (%) and seconds.
    An image classifier forgets --forget-class, measured on --data, and is written back in
    its source's format. `--set KEY=VALUE` sets a method's hyper-parameter."""
    options = dict(locals())
    for key in ("model", "out", "overwrite", "as_json"):
        options.pop(key)
    options["hyperparameter"] = parse_assignments(hyperparameter) or None
    run_command("unlearn", model, options, out, overwrite, as_json, f"unlearned from {model}")


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
