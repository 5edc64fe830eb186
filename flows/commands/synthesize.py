"""`modhifi synthesize`: calibration samples made from a checkpoint alone (data-free),
written as a dataset folder (samples.npz, preview.png, synthesis.json).

Every option is checked before any work; the folder is written only on success, so bad
input leaves nothing on disk.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer

from flows.commands.loading import check_fits_in_memory, check_output
from flows.console import emit

# The samples exist three times at the end: the result, its normalised copy and the .npz bytes.
SAMPLE_COPIES = 3


def synthesize(
    model: Path = typer.Option(..., "--model", help="Checkpoint to synthesise from."),
    out: Path = typer.Option(..., "--out", help="Folder to write (samples.npz, preview.png, synthesis.json)."),
    per_class: int | None = typer.Option(
        None, "--per-class", help="Samples per class (default 50; --method folder: at most this many, default all)."
    ),
    method: str = typer.Option("deepinversion", help="deepinversion (model inversion), gaussian (noise) or folder."),
    source: Path | None = typer.Option(None, help="For --method folder: a folder of .npz/.pt sample files."),
    classes: str | None = typer.Option(
        None, help="Comma-separated classes to make, e.g. a forget class (default all)."
    ),
    steps: int = typer.Option(100, help="Inversion steps per batch."),
    lr: float = typer.Option(0.1, help="Inversion learning rate (Adam)."),
    batch_size: int = typer.Option(500, help="Samples optimised together (class-balanced)."),
    reference: str | None = typer.Option(
        None, help="Also measure real data's diversity for scale: a dataset name, e.g. digits (not used to synthesise)."
    ),
    seed: int = typer.Option(0, min=0),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already holds samples."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Synthesise class-balanced labelled samples from a model and report how the model judges them."""
    from modhifi_core.errors import InputError
    from modhifi_core.synthesis import METHODS, check_output_folder

    if method not in METHODS:
        raise InputError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if per_class is not None and per_class < 1:
        raise InputError(f"--per-class must be at least 1, got {per_class}")
    if (source is not None) != (method == "folder"):
        raise InputError("--source DIR goes with --method folder, and only with it")
    check_output(out, overwrite, folder=True)
    check_output_folder(out)
    wanted = parse_classes(classes)

    from modhifi_core import synthesis
    from modhifi_core.checkpoint import load_checkpoint
    from modhifi_core.data import data_spec, load_from_spec

    config = synthesis.InversionConfig(steps=steps, lr=lr, batch_size=batch_size)
    ckpt = load_checkpoint(model)
    shape = (ckpt.config.in_channels, ckpt.config.image_size, ckpt.config.image_size)
    real = None
    if reference is not None:
        spec = ckpt.metadata.get("data") or data_spec(
            image_size=ckpt.config.image_size, channels=ckpt.config.in_channels
        )
        real = load_from_spec(spec, dataset=reference).train
    if per_class is None and method != "folder":
        per_class = 50
    if method != "folder":
        count = per_class * (len(wanted) if wanted else ckpt.config.num_classes)
        needed = SAMPLE_COPIES * count * (4 * shape[0] * shape[1] * shape[2] + 8)
        check_fits_in_memory(needed, f"synthesising {count:,} samples of shape {shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # result.warnings are printed below, once
        result = synthesis.synthesize(
            ckpt.model,
            per_class,
            image_shape=shape,
            method=method,
            classes=wanted,
            config=config,
            seed=seed,
            source=source,
            reference=real,
        )
    for note in result.warnings:
        print(f"warning: {note}", file=sys.stderr)
    manifest = synthesis.save_synthetic(result, out, parents={"model": ckpt.sha256})
    emit(
        {
            "method": method,
            "samples": len(result.samples),
            "per_class": per_class,
            "classes": result.classes,
            **result.quality,
            "seconds": result.seconds,
            "out": str(out),
            "preview": str(out / "preview.png"),
            "samples_sha256": manifest["samples_sha256"],
            "warnings": list(result.warnings),
        },
        as_json,
        title=f"{method} samples from {model}",
    )


def parse_classes(text: str | None) -> list[int] | None:
    """'3' or '0,1,2' -> [3] or [0, 1, 2]; None stays None (all classes)."""
    from modhifi_core.errors import InputError

    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--classes must be comma-separated integers, got {text!r}") from None
