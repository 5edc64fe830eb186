"""`modhifi lineage ARTIFACT`: where a file (or a Hugging Face folder modhifi wrote) came
from, with hashes, and a verification."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from flows.console import console


def lineage(
    artifact: Path = typer.Argument(
        ..., help="A file or Hugging Face folder the pipeline produced (outputs/final/model.pt, outputs/pruned/hf)."
    ),
    output_format: str = typer.Option("md", "--format", help="md (readable) or json."),
    verify: bool = typer.Option(False, "--verify", help="Recompute every ancestor's hashes on disk."),
    workspace: Path | None = typer.Option(
        None, help="The workspace (default: the folder above ARTIFACT with dvc.lock)."
    ),
) -> None:
    """List every stage, command, parameter and hash behind ARTIFACT (exit 3 if --verify fails)."""
    from flows.lineage import to_markdown, trace
    from modhifi_core.errors import InputError

    if output_format not in ("md", "json"):
        raise InputError(f"unknown --format {output_format!r}; choose md or json")
    result = trace(artifact, workspace, verify)
    if output_format == "json":
        sys.stdout.write(json.dumps(result.to_dict(), sort_keys=True, default=str) + "\n")
    else:
        console.print(to_markdown(result), markup=False, highlight=False)
    if verify and not result.verified:
        failed = result.problems or result.unverifiable
        print(f"error: lineage verification failed: {failed[0]}", file=sys.stderr)
        raise typer.Exit(3)
    if result.checkpoint and "error" in result.checkpoint:  # e.g. a hostile pickle: the report says what it could
        raise InputError(result.checkpoint["error"])
