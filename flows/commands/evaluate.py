"""`modhifi evaluate`: a model on real data or held-out text — the `--model`'s kind runs
it (`flows.commands.dispatch`): a checkpoint's or an image classifier's accuracy (with a
forget class, the unlearning evidence), a causal LM's perplexity, an encoder's
sentence-embedding agreement with a reference."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.dispatch import DEVICE, DTYPE, run_command


def evaluate(
    model: str = typer.Option(
        ..., "--model", help="FILE.pt, hf:DIR, torchvision:ARCH, timm:ARCH or python:MOD:FACTORY."
    ),
    text: str | None = typer.Option(None, "--text", help="Language model: held-out text (file or folder)."),
    reference: str | None = typer.Option(None, "--reference", help="Language model: hf:DIR to compare with."),
    samples: int | None = typer.Option(None, min=1, help="Language model: windows (an encoder: sentences) of --text."),
    length: int | None = typer.Option(None, min=2, help="Language model: tokens per window."),
    dataset: str | None = typer.Option(None, help="Checkpoint: dataset (default: the one it was trained on)."),
    data: str | None = typer.Option(None, help="Image model: dataset (digits, fashion-mnist, cifar10) or folder."),
    data_dir: Path | None = typer.Option(None, help="Folder of the dataset's files."),
    forget_class: int | None = typer.Option(None, "--forget-class", help="Also report UA, RA, TA, MIA for class K."),
    weights: Path | None = typer.Option(
        None, help="torchvision/timm/python: weights file (or a folder modhifi wrote)."
    ),
    num_classes: int | None = typer.Option(None, min=1, help="torchvision/timm: the constructor's num_classes."),
    input_shape: str | None = typer.Option(None, help="python: C,H,W of one input, e.g. 3,16,16."),
    image_size: int | None = typer.Option(None, min=1, help="Image model: input size (default: its config's, or 224)."),
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Accuracy and per-class accuracy (UA, RA, TA, MIA for a forgotten class), perplexity, or embedding agreement."""
    options = dict(locals())
    for key in ("model", "as_json"):
        options.pop(key)
    run_command("evaluate", model, options, as_json=as_json, title=f"evaluation of {model}")
