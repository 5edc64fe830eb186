"""`modhifi prune`: structured pruning to a target — the `--model`'s kind runs it
(`flows.commands.dispatch`): a checkpoint's channels to `--target-flops`, a language
model's FFN neurons to `--target-params` / `--ffn-fraction`, an image classifier's conv
channels or ViT/Swin MLP neurons, written back in the source's own format."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.dispatch import DEVICE, DTYPE, run_command

KIND_DEFAULT = "(default: the model kind's)"


def prune(
    model: str = typer.Option(
        ..., "--model", help="FILE.pt, hf:DIR, torchvision:ARCH, timm:ARCH or python:MOD:FACTORY."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the pruned model (a .pt file, or a folder)."),
    target_flops: float | None = typer.Option(None, help=f"Fraction of the dense FLOPs that remains {KIND_DEFAULT}."),
    target_params: float | None = typer.Option(None, help=f"Fraction of the parameters that remains {KIND_DEFAULT}."),
    ffn_fraction: float | None = typer.Option(None, help="Language model: fraction of FFN neurons removed per layer."),
    method: str | None = typer.Option(None, help="modhifi (default) or a baseline the kind offers (see its docs)."),
    calibration: str | None = typer.Option(
        None, help="synthetic (data-free, default), real, gaussian, a folder of samples, or text:PATH."
    ),
    calibration_samples: int | None = typer.Option(None, min=1, help=f"Calibration samples {KIND_DEFAULT}."),
    compensation: str | None = typer.Option(None, help="none, scalar or full (default: full for modhifi, else none)."),
    score: str | None = typer.Option(None, help="ModHiFi selection score: saliency (default) or fidelity."),
    compensation_order: str | None = typer.Option(None, help="joint (default) or sequential."),
    allocation: str | None = typer.Option(None, help="ModHiFi allocation across layers: uniform (default) or union."),
    rounds: int | None = typer.Option(None, min=1, help="Pruning rounds (default: one per halving of FLOPs)."),
    round_to: int | None = typer.Option(None, min=1, help="Round kept channel counts up to a multiple of this."),
    allow_floor: bool | None = typer.Option(
        None, "--allow-floor", help="A --target-flops below the model's floor prunes to the floor (else: refused)."
    ),
    batch_size: int | None = typer.Option(None, min=1, help=f"Calibration batch size {KIND_DEFAULT}."),
    latency_repeats: int | None = typer.Option(None, min=1, help=f"Timed forward passes per model {KIND_DEFAULT}."),
    seed: int = typer.Option(0, min=0, help="Seed of the calibration draw and of random."),
    eval_text: str | None = typer.Option(None, help="Language model: held-out text (file or folder) for perplexity."),
    length: int | None = typer.Option(None, min=2, help="Language model: tokens per calibration sequence."),
    weights: Path | None = typer.Option(
        None, help="torchvision/timm/python: weights file (or a folder modhifi wrote)."
    ),
    num_classes: int | None = typer.Option(None, min=1, help="torchvision/timm: the constructor's num_classes."),
    input_shape: str | None = typer.Option(None, help="python: C,H,W of one input, e.g. 3,16,16."),
    data: str | None = typer.Option(None, help="Image model: dataset (digits, fashion-mnist, cifar10) or folder."),
    data_dir: Path | None = typer.Option(None, help="Folder of the --data dataset's files."),
    image_size: int | None = typer.Option(None, min=1, help="Image model: input size (default: its config's, or 224)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Prune physically and report accuracy (or perplexity), FLOPs/params ratios and CPU speed-up."""
    options = dict(locals())
    for key in ("model", "out", "overwrite", "as_json"):
        options.pop(key)
    run_command("prune", model, options, out, overwrite, as_json, f"pruned {model}")
