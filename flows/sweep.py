"""Parameter sweeps: run the pipeline once per value, collect one comparison table.

`modhifi sweep prune.target_flops=0.3,0.5,0.7` sets the value in params.yaml, runs the
pipeline (only the affected stages execute; DVC's run-cache restores outputs it has
seen before), records the evaluation metrics, and finally restores the original
params.yaml and its outputs. Several assignments sweep their cartesian product.

DVC's stages read params.yaml itself, so a point's values have to be in that file while
it runs. Before the first point the user's file is copied, byte for byte, to a backup
(`modhifi_core.params.sweep_backup_path`) together with this process's pid; the finally
clause restores it and deletes the backup. If the sweep is killed (SIGKILL, power loss)
the next command that loads params.yaml — `modhifi run`, `stage`, `sweep` — finds the
backup of a dead process and restores the user's file, comments included, before it reads
anything (`modhifi_core.params.restore_interrupted_sweep`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path

import yaml

from modhifi_core.errors import InputError
from modhifi_core.params import restore_interrupted_sweep, sweep_backup_path, validate_params
from modhifi_core.safe_io import atomic_write_bytes, atomic_write_json, atomic_write_text

COLUMNS = ("pruned_test_accuracy", "flops_ratio", "params_ratio", "latency_speedup", "UA", "RA", "TA", "MIA")


def parse_assignments(assignments: list[str], params: dict) -> dict[str, list]:
    """`["prune.target_flops=0.3,0.5"]` -> `{"prune.target_flops": [0.3, 0.5]}`, values typed
    like the current ones and every combination validated before anything runs."""
    grid: dict[str, list] = {}
    for text in assignments:
        key, sep, values = text.partition("=")
        if not sep or not values:
            raise InputError(f"sweep assignment {text!r} must look like section.key=v1,v2")
        current = _get(params, key)
        grid[key] = [yaml.safe_load(v) if not isinstance(current, str) else v for v in values.split(",")]
    for point in points(grid):
        validate_params(apply(params, point), source="sweep point " + _label(point))
    return grid


def points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def apply(params: dict, point: dict) -> dict:
    result = json.loads(json.dumps(params))
    for key, value in point.items():
        *path, last = key.split(".")
        node = result
        for part in path:
            node = node[part]
        node[last] = value
    return result


def run_sweep(root: Path, assignments: list[str], run_pipeline: Callable[[], dict]) -> dict:
    """Run every point of the sweep; returns and writes `outputs/sweeps/<name>.{json,csv,png}`."""
    params_file = root / "params.yaml"
    restore_interrupted_sweep(params_file)
    original = params_file.read_text()
    params = yaml.safe_load(original)
    grid = parse_assignments(assignments, params)
    rows = []
    backup = sweep_backup_path(params_file)
    atomic_write_json(backup, {"pid": os.getpid(), "params": original})
    try:
        for point in points(grid):
            atomic_write_text(params_file, yaml.safe_dump(apply(params, point), sort_keys=False))
            summary = run_pipeline()
            metrics = summary["metrics"]
            rows.append({**point, **{c: metrics.get(c) for c in COLUMNS}, "ran": ",".join(summary["ran"])})
    finally:
        atomic_write_text(params_file, original)
        backup.unlink(missing_ok=True)
    run_pipeline()  # back to the original params' outputs (restored from DVC's run-cache)
    name = "sweep-" + "-".join(k.replace(".", "_") for k in grid)
    folder = root / "outputs" / "sweeps"
    result = {"name": name, "grid": grid, "rows": rows}
    atomic_write_json(folder / f"{name}.json", result)
    atomic_write_text(folder / f"{name}.csv", _csv(rows))
    atomic_write_bytes(folder / f"{name}.png", plot_sweep(rows, list(grid)))
    return result


def plot_sweep(rows: list[dict], keys: list[str]) -> bytes:
    """Accuracy against the FLOPs that remain (one point per sweep run, labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ordered = sorted(rows, key=lambda r: r["flops_ratio"] or 0)
    xs = [r["flops_ratio"] for r in ordered]
    ax.plot(xs, [r["pruned_test_accuracy"] for r in ordered], "o-", label="pruned model (before unlearning)")
    ax.plot(xs, [r["TA"] for r in ordered], "s--", label="final model, retained classes (TA)")
    for row in ordered:
        label = ", ".join(str(row[k]) for k in keys)
        ax.annotate(label, (row["flops_ratio"], row["pruned_test_accuracy"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.margins(x=0.12, y=0.1)
    ax.set_xlabel("FLOPs remaining (pruned / dense)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy against remaining FLOPs, one point per value of {', '.join(keys)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _get(params: dict, key: str) -> object:
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise InputError(f"unknown parameter {key!r} in params.yaml")
        node = node[part]
    return node


def _label(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())
