"""`modhifi prune`: structured pruning of a checkpoint to a FLOPs target (ModHiFi-P or a
baseline), with the pruned checkpoint, its accuracy, size ratios and measured speed-up."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flows.console import emit

if TYPE_CHECKING:
    from torch import Tensor, nn

    from modhifi_core.data import DatasetSplits

CALIBRATIONS = ("real", "synthetic", "gaussian")


def prune(
    model: Path = typer.Option(..., "--model", help="Checkpoint to prune."),
    out: Path = typer.Option(..., "--out", help="Where to write the pruned checkpoint (.pt)."),
    target_flops: float = typer.Option(0.5, help="Fraction of the dense FLOPs that remains, in (0, 1)."),
    method: str = typer.Option("modhifi", help="modhifi, magnitude (= l2), l1, l2 or random."),
    calibration: str = typer.Option(
        "synthetic", help="synthetic (made from the model: data-free), real (training images) or gaussian."
    ),
    calibration_samples: int = typer.Option(512, min=1, help="Calibration images to score and recalibrate on."),
    compensation: str | None = typer.Option(None, help="none, scalar or full (default: scalar for modhifi)."),
    allocation: str = typer.Option("uniform", help="ModHiFi allocation across layers: uniform or union."),
    rounds: int | None = typer.Option(None, min=1, help="Pruning rounds (default: one per halving of FLOPs)."),
    round_to: int = typer.Option(1, min=1, help="Round kept channel counts up to a multiple of this."),
    batch_size: int = typer.Option(128, min=1, help="Calibration batch size."),
    latency_repeats: int = typer.Option(10, min=1, help="Timed forward passes (batch 64) per model."),
    seed: int = typer.Option(0, min=0, help="Seed of the calibration subset, gaussian/synthetic data and random."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Prune a checkpoint's channels physically and report accuracy, FLOPs/params ratios and CPU speed-up."""
    from modhifi_core.errors import InputError
    from modhifi_core.pruning import ALLOCATIONS, COMPENSATIONS, METHODS

    if not 0.0 < target_flops < 1.0:
        raise InputError(f"--target-flops must be a fraction strictly between 0 and 1, got {target_flops}")
    if method not in METHODS:
        raise InputError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if calibration not in CALIBRATIONS:
        raise InputError(f"unknown --calibration {calibration!r}; choose one of {', '.join(CALIBRATIONS)}")
    if compensation is not None and compensation not in COMPENSATIONS:
        raise InputError(f"--compensation must be one of {', '.join(COMPENSATIONS)}, got {compensation!r}")
    if allocation not in ALLOCATIONS:
        raise InputError(f"--allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    import torch

    from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
    from modhifi_core.data import data_spec, load_from_spec
    from modhifi_core.pruning import prune_model
    from modhifi_core.pruning.report import latency_report
    from modhifi_core.training import accuracy

    ckpt = load_checkpoint(model)
    spec = ckpt.metadata.get("data") or data_spec(image_size=ckpt.config.image_size, channels=ckpt.config.in_channels)
    data = load_from_spec(spec)
    images = calibration_images(ckpt.model, data, calibration, calibration_samples, seed)
    compensation = compensation or ("scalar" if method == "modhifi" else "none")
    options = {
        "target_flops": target_flops,
        "compensation": compensation,
        "rounds": rounds,
        "round_to": round_to,
        "batch_size": batch_size,
    }
    if method == "modhifi":
        options["allocation"] = allocation
    if method == "random":
        options["seed"] = seed
    torch.manual_seed(seed)
    result = prune_model(ckpt.model, images, method, **options)
    dense_accuracy, test_accuracy = accuracy(ckpt.model, data.test), accuracy(result.model, data.test)
    latency = latency_report(ckpt.model, result.model, data.image_shape, repeats=latency_repeats)
    report = result.report
    metrics = {
        "flops_ratio": report["flops_ratio"],
        "params_ratio": report["params_ratio"],
        "test_accuracy": test_accuracy,
        "dense_test_accuracy": dense_accuracy,
        **latency,
    }
    params = {**options, "method": method, "calibration": calibration, "seed": seed}
    params["calibration_samples"] = len(images)
    sha = save_checkpoint(
        out,
        result.model,
        ckpt.config,
        metadata={
            "stage": "prune",
            "data": spec,
            "parents": {"model": ckpt.sha256},
            "params": params,
            "metrics": metrics,
            "pruning_report": report,
        },
    )
    emit(
        {
            **metrics,
            "method": method,
            "compensation": compensation,
            "target_flops": target_flops,
            "calibration": calibration,
            "seconds": report["seconds"],
            "out": str(out),
            "sha256": sha,
        },
        as_json,
        title=f"pruned {model} with {method}",
    )


def calibration_images(model: nn.Module, data: DatasetSplits, kind: str, samples: int, seed: int) -> Tensor:
    """`samples` calibration images `(N, C, H, W)`: a seeded subset of the training
    images, standard-normal noise in the model's input space, or model inversions
    (class-balanced) from `modhifi_core.synthesis`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    if kind == "real":
        order = torch.randperm(len(data.train), generator=generator)[:samples]
        return data.train.images[order.sort().values]
    if kind == "gaussian":
        return torch.randn(samples, *data.image_shape, generator=generator)
    from modhifi_core.synthesis import synthesize

    per_class = -(-samples // data.num_classes)
    made = synthesize(model, per_class, image_shape=data.image_shape, seed=seed)  # warns for a model without BN
    return made.samples.images[:samples]
