"""The one path of every model command: `--model` -> its kind (`kinds.kind_of`) -> that
kind's command (`<kind.package>.cli.<command>(kind, out, options) -> metrics`).

A command never asks what kind it holds. What differs per kind (which options apply,
their defaults, whether `--out` is a file or a folder, how a model loads and saves) is the
adapter's. An option the user gave that the kind does not take is one line, not ignored.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from flows.commands.output import check_output
from flows.console import emit

# The compute options every command of every kind takes (`kinds.base.COMPUTE_OPTIONS`),
# declared once; their defaults are `modhifi_core.compute.resolve`'s.
DEVICE = typer.Option(None, help="auto (CUDA when available; default), cpu, cuda or cuda:N.")
DTYPE = typer.Option(None, help="Weights and forward passes: float32 (default), bfloat16 or float16.")


def run_command(
    command: str,
    model: str | Path | None,
    options: dict,
    out: Path | None = None,
    overwrite: bool = False,
    as_json: bool = False,
    title: str = "",
) -> dict:
    """Run `modhifi COMMAND` on `model` with the `options` the user gave (None or an empty
    list: not given) on the device and dtype of `--device`/`--dtype` (checked first, one
    line; recorded in the metrics); print its metrics (`--json`: one JSON line) and return them."""
    from kinds import kind_of
    from kinds.base import COMPUTE_OPTIONS
    from modhifi_core.compute import resolve
    from modhifi_core.errors import InputError

    compute = resolve(**{key: options.pop(key) for key in COMPUTE_OPTIONS if options.get(key) is not None})
    kind = kind_of(None if model is None else str(model))
    kind.compute = compute
    if command not in kind.options:
        why = kind.skipped.get(command, "")
        raise InputError(f"modhifi {command} does not apply to a {kind.name} model{': ' + why if why else ''}")
    given = {key: value for key, value in options.items() if value is not None and value != []}
    taken = kind.options[command]
    for key in given:
        if key not in taken:
            flags = ", ".join(_flag(k) for k in taken)
            raise InputError(
                f"{_flag(key)} is not an option of modhifi {command} for a {kind.name} model (it takes {flags})"
            )
    if out is not None:  # samples are always a folder; no input (the model first) may be replaced
        folder = kind.output == "folder" or command == "synthesize"
        models = [model, *(given.get(key) for key in MODEL_OPTIONS)]
        inputs = [value for key, value in given.items() if key not in MODEL_OPTIONS]
        check_output(out, overwrite, folder=folder, inputs=inputs, models=models)
    cli = importlib.import_module(f"{kind.package}.cli")
    metrics = {**getattr(cli, command)(kind, out, given), **compute.describe()}
    emit(metrics, as_json, title or f"{command} {model}")
    return metrics


# The options that name a model (a file, or a folder whose insides an `--out` must not touch).
MODEL_OPTIONS = ("weights", "teacher", "reference")

FLAGS = {"hyperparameter": "--set", "architecture": "--model"}  # a typer parameter whose flag is not its name


def _flag(name: str) -> str:
    return FLAGS.get(name, "--" + name.replace("_", "-"))
