"""`modhifi init DIR --model SOURCE`: a new workspace for a model (`flows.new_workspace`)."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.console import console, emit


def init(
    directory: Path = typer.Argument(..., help="The new workspace: a folder that does not exist yet, or an empty one."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="hf:DIR, torchvision:ARCH, timm:ARCH, python:MODULE:FACTORY or FILE.pt (default: a zoo "
        "model trained on digits).",
    ),
    settings: list[str] = typer.Option(
        [], "--set", help="section.key=value written into its params.yaml (repeatable), e.g. language.eval_text=FILE."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
) -> None:
    """Create a workspace anywhere: a git repository with DVC, the params.yaml of the model's
    kind (every default, commented), its dvc.yaml and .gitignore; then `modhifi run` there."""
    from flows.new_workspace import create_workspace, parse_settings

    root = create_workspace(directory, model, parse_settings(settings))
    if as_json:
        emit({"workspace": str(root)}, True, "")
        return
    console.print(f"workspace ready: {root}\nnext: cd {root} && modhifi run   (params.yaml holds every setting)")
