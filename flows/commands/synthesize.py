"""`modhifi synthesize`: class-balanced labelled samples made from a model itself
(DeepInversion, gaussian noise, or a folder of samples) — the `--model`'s kind runs it
(`flows.commands.dispatch`)."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.dispatch import DEVICE, DTYPE, run_command


def synthesize(
    model: str = typer.Option(..., "--model", help="Checkpoint to synthesise from."),
    out: Path = typer.Option(..., "--out", help="Folder to write (samples.npz, preview.png, synthesis.json)."),
    per_class: int | None = typer.Option(
        None, "--per-class", help="Samples per class (default 50; --method folder: at most this many, default all)."
    ),
    method: str | None = typer.Option(None, help="deepinversion (model inversion), gaussian (noise) or folder."),
    source: Path | None = typer.Option(None, help="For --method folder: a folder of .npz/.pt sample files."),
    classes: str | None = typer.Option(
        None, help="Comma-separated classes to make, e.g. a forget class (default all)."
    ),
    steps: int | None = typer.Option(None, help="Inversion steps per batch."),
    lr: float | None = typer.Option(None, help="Inversion learning rate (Adam)."),
    batch_size: int | None = typer.Option(None, help="Samples optimised together (class-balanced)."),
    reference: str | None = typer.Option(
        None, help="Also measure real data's diversity for scale: a dataset name, e.g. digits (not used to synthesise)."
    ),
    seed: int = typer.Option(0, min=0),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already holds samples."),
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Synthesise class-balanced labelled samples from a model and report how the model judges them."""
    options = dict(locals())
    for key in ("model", "out", "overwrite", "as_json"):
        options.pop(key)
    run_command("synthesize", model, options, out, overwrite, as_json, f"synthesised from {model}")
