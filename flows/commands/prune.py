"""`modhifi prune`: structured pruning of a checkpoint to a FLOPs target (ModHiFi-P or a
baseline) — an adapter over `modhifi_core.operations.prune_checkpoint`."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.loading import check_output
from flows.console import emit


def prune(
    model: Path = typer.Option(..., "--model", help="Checkpoint to prune."),
    out: Path = typer.Option(..., "--out", help="Where to write the pruned checkpoint (.pt)."),
    target_flops: float = typer.Option(0.5, help="Fraction of the dense FLOPs that remains, in (0, 1)."),
    method: str = typer.Option("modhifi", help="modhifi, magnitude (= l2), l1, l2 or random."),
    calibration: str = typer.Option(
        "synthetic", help="synthetic (made from the model: data-free), real (training images) or gaussian."
    ),
    calibration_samples: int = typer.Option(512, min=1, help="Calibration images to score and recalibrate on."),
    compensation: str | None = typer.Option(
        None, help="none, scalar or full (default: scalar for modhifi, else none)."
    ),
    allocation: str = typer.Option("uniform", help="ModHiFi allocation across layers: uniform or union."),
    rounds: int | None = typer.Option(None, min=1, help="Pruning rounds (default: one per halving of FLOPs)."),
    round_to: int = typer.Option(1, min=1, help="Round kept channel counts up to a multiple of this."),
    batch_size: int = typer.Option(128, min=1, help="Calibration batch size."),
    latency_repeats: int = typer.Option(20, min=1, help="Interleaved timed forward passes (batch 64) per model."),
    seed: int = typer.Option(0, min=0, help="Seed of the calibration subset, gaussian/synthetic data and random."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it already exists."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Prune a checkpoint's channels physically and report accuracy, FLOPs/params ratios and CPU speed-up."""
    from modhifi_core.params import CollectParams, PruneParams

    options = dict(target_flops=target_flops, method=method, compensation=compensation, allocation=allocation)
    settings = PruneParams(**options, rounds=rounds, round_to=round_to, latency_repeats=latency_repeats)
    CollectParams(calibration=calibration, samples=calibration_samples, batch_size=batch_size)  # validated up front
    check_output(out, overwrite)

    from flows.commands.loading import load_model_and_data
    from modhifi_core.calibration import calibration_set
    from modhifi_core.operations.prune import prune_checkpoint

    ckpt, data = load_model_and_data(model)
    images = calibration_set(calibration, ckpt.model, data, calibration_samples, seed)
    outcome = prune_checkpoint(
        ckpt,
        images,
        data,
        settings,
        calibration_source=calibration,
        seed=seed,
        batch_size=batch_size,
        latency_repeats=latency_repeats,
    )
    sha = outcome.save(out)
    emit({**outcome.metrics, "target_flops": target_flops, "out": str(out), "sha256": sha}, as_json, f"pruned {model}")
