"""Parameter sweeps: run the pipeline once per value, collect one comparison table.

`modhifi sweep prune.target_flops=0.3,0.5,0.7` sets the value in params.yaml, runs the
pipeline (only the affected stages execute; DVC's run-cache restores outputs it has
seen before), records the evaluation metrics, and finally restores the original
params.yaml and its outputs. Several assignments sweep their cartesian product.

DVC's stages read params.yaml itself, so a point's values have to be in that file while
it runs. Before the first point the user's file is copied, byte for byte, to a backup
(`tasks.params.sweep_backup_path`) together with this process's pid; the finally
clause restores it and deletes the backup. If the sweep is killed (SIGKILL, power loss)
the next command that loads params.yaml — `modhifi run`, `stage`, `sweep` — finds the
backup of a dead process and restores the user's file, comments included, before it reads
anything (`tasks.params.restore_interrupted_sweep`).

With an `executor` (`modhifi sweep --workers N`: a thread pool; or `cluster.address` set:
the Dask cluster) the points run concurrently instead, each in its own copy of the
workspace (`point_workspace`: the code, dvc.yaml, dvc.lock and outputs, the point's
params.yaml, DVC's cache shared with the workspace's) by its own `modhifi run` process, so
that no two runs write one workspace; the rows are gathered in point order and the copies
removed. The user's params.yaml and outputs are not touched. A copy lives next to the
workspace, so Dask workers on other machines need that folder on a shared filesystem.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

import yaml

from modhifi_core.errors import InputError
from modhifi_core.safe_io import atomic_write_bytes, atomic_write_json, atomic_write_text
from tasks.params import restore_interrupted_sweep, sweep_backup_path, validate_params
from tasks.workspace import Workspace

# The evaluation metrics a row shows, those any point has: a classifier's accuracy and
# unlearning metrics, a causal LM's perplexity, an encoder's agreement with its dense self.
COLUMNS = (
    "pruned_test_accuracy",
    "flops_ratio",
    "params_ratio",
    "latency_speedup",
    "UA",
    "RA",
    "TA",
    "MIA",
    "perplexity",
    "perplexity_ratio",
    "mean_cosine",
    "top10_agreement",
)
# What the plot draws against the FLOPs that remain: the first y-axis whose columns a row has.
PLOTS = (
    (
        "test accuracy (%)",
        (("pruned_test_accuracy", "pruned model (before unlearning)"), ("TA", "final model, retained classes (TA)")),
    ),
    ("held-out perplexity", (("perplexity", "pruned model"),)),
    ("agreement with the dense encoder", (("mean_cosine", "mean cosine"), ("top10_agreement", "top-10 agreement"))),
)


def parse_assignments(assignments: list[str], params: dict) -> dict[str, list]:
    """`["prune.target_flops=0.3,0.5"]` -> `{"prune.target_flops": [0.3, 0.5]}`, values typed
    like the current ones and every combination validated before anything runs."""
    grid: dict[str, list] = {}
    for text in assignments:
        key, sep, values = text.partition("=")
        if not sep or not values:
            raise InputError(f"sweep assignment {text!r} must look like section.key=v1,v2")
        if key in grid:
            raise InputError(f"sweep key {key} is given twice; give its values once: {key}=v1,v2,...")
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


def run_sweep(
    root: Path, assignments: list[str], run_pipeline: Callable[[], dict], executor: Executor | None = None
) -> dict:
    """Run every point of the sweep (one after the other in `root` with `run_pipeline`, or
    concurrently in workspace copies on `executor`); returns and writes
    `outputs/sweeps/<name>.{json,csv,png}`."""
    params_file = root / "params.yaml"
    restore_interrupted_sweep(params_file)
    original = params_file.read_text()
    params = yaml.safe_load(original)
    grid = parse_assignments(assignments, params)
    if executor is None:
        rows = _sequential(root, original, params, grid, run_pipeline)
    else:
        rows = _concurrent(root, params, grid, executor)
    name = "sweep-" + "-".join(k.replace(".", "_") for k in grid)
    folder = root / "outputs" / "sweeps"
    result = {"name": name, "grid": grid, "rows": rows}
    atomic_write_json(folder / f"{name}.json", result)
    atomic_write_text(folder / f"{name}.csv", _csv(rows))
    atomic_write_bytes(folder / f"{name}.png", plot_sweep(rows, list(grid)))
    return result


@contextmanager
def sweep_executor(root: Path, workers: int | None) -> Iterator[Executor | None]:
    """Where a sweep's points run: `workers` threads (each point its own process), else the
    Dask cluster of `root`'s `cluster` params when one is set (no retries: a failed point
    fails the same again), else None (one after the other)."""
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        with ThreadPoolExecutor(workers) as pool:
            yield pool
        return
    from tasks.cluster import open_executor

    cluster = Workspace.at(root).params().cluster
    with open_executor(cluster.address, cluster.workers, retries=0) as executor:
        yield executor


def sweep_rows(points: list[dict], summaries: list[dict]) -> list[dict]:
    """One row per point: its values, the `COLUMNS` that any point's evaluation has (None
    where this one lacks it), the stages that ran."""
    shown = [c for c in COLUMNS if any(summary["metrics"].get(c) is not None for summary in summaries)]
    return [
        {**point, **{c: summary["metrics"].get(c) for c in shown}, "ran": ",".join(summary["ran"])}
        for point, summary in zip(points, summaries)
    ]


def _sequential(root: Path, original: str, params: dict, grid: dict, run_pipeline: Callable[[], dict]) -> list[dict]:
    """Each point's values written to `root`'s params.yaml in turn (module docstring)."""
    params_file = root / "params.yaml"
    summaries = []
    backup = sweep_backup_path(params_file)
    atomic_write_json(backup, {"pid": os.getpid(), "params": original})
    lock = root / "dvc.lock"
    locked = lock.read_bytes() if lock.is_file() else None
    try:
        for point in points(grid):
            atomic_write_text(params_file, yaml.safe_dump(apply(params, point), sort_keys=False))
            summaries.append(run_pipeline())
    except KeyboardInterrupt:
        _restore_outputs(root, locked)
        raise
    finally:
        atomic_write_text(params_file, original)
        backup.unlink(missing_ok=True)
    run_pipeline()  # back to the original params' outputs (restored from DVC's run-cache)
    return sweep_rows(points(grid), summaries)


def _restore_outputs(root: Path, locked: bytes | None) -> None:
    """After a Ctrl-C: the workspace's `dvc.lock` as it was before the sweep (`locked`;
    None: there was none, and nothing to restore) and the outputs it records, from DVC's
    cache (each was built before), partial writes removed. Not itself interruptible."""
    from flows.dvc import dvc, locked_outs, remove_partial_writes, uninterrupted

    if locked is None:
        return
    with uninterrupted():
        atomic_write_bytes(root / "dvc.lock", locked)
        for paths in locked_outs(root).values():
            for path in paths:
                remove_partial_writes(root / path)
        done = dvc(root, "checkout", "--force")
        if done.returncode != 0:
            print(f"warning: could not restore the outputs: {done.stderr.strip()[-300:]}", file=sys.stderr)


def _concurrent(root: Path, params: dict, grid: dict, executor: Executor) -> list[dict]:
    """Every point as one `run_point` task on `executor`, in its own workspace copy."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}-sweep-", dir=root.parent))
    futures = []
    try:
        for index, point in enumerate(points(grid)):
            copy = point_workspace(root, scratch / f"point-{index}", apply(params, point))
            futures.append(executor.submit(run_point, str(copy)))
        summaries = [future.result() for future in futures]
    finally:
        wait(futures)  # no copy is removed under a running point
        shutil.rmtree(scratch, ignore_errors=True)
    return sweep_rows(points(grid), summaries)


# Not copied into a point's workspace, by folder: version control, run state, tracking
# stores, interpreters; DVC's cache and scratch (the copy uses the workspace's cache);
# earlier sweeps.
_NOT_COPIED = {
    ".": {".git", ".prefect", ".modhifi-run.lock", ".modhifi-run.lock.pid", "mlflow.db", "mlartifacts", ".venv"},
    ".dvc": {"cache", "tmp"},
    "outputs": {"sweeps"},
}


def point_workspace(root: Path, copy: Path, params: dict) -> Path:
    """A copy of workspace `root` at `copy` that runs with `params`: `root`'s files but
    `_NOT_COPIED` (and outputs/sweeps), DVC without git, DVC's cache `root`'s. A point that
    runs on the cluster computes its own statistics in its process (`cluster.address:
    null`): its task holds a worker thread, and shards queued behind it would never start."""
    from flows.dvc import dvc

    def ignored(folder: str, names: list[str]) -> set[str]:
        skip = _NOT_COPIED.get(Path(folder).relative_to(root).as_posix(), set())
        return {name for name in names if name in skip or name == "__pycache__"}

    shutil.copytree(root, copy, symlinks=True, ignore=ignored)
    point = json.loads(json.dumps(params))
    if point.get("cluster", {}).get("address") is not None:
        point["cluster"]["address"] = None
    atomic_write_text(copy / "params.yaml", yaml.safe_dump(point, sort_keys=False))
    for setting in (("core.no_scm", "true"), ("cache.dir", str(root / ".dvc" / "cache"))):
        done = dvc(copy, "config", "--local", *setting)
        if done.returncode != 0:
            raise InputError(f"cannot set up the sweep workspace {copy}: {done.stdout.strip()[-300:]}")
    return copy


def run_point(workspace: str) -> dict:
    """The task of one concurrent point: `modhifi run --json --quiet` in `workspace` (its own
    process, its own Prefect home) and the run's summary. Raises `RuntimeError` with the end
    of its stderr when the run fails."""
    env = dict(os.environ, MODHIFI_PROGRESS="0")
    if not env.get("PREFECT_API_URL"):
        env["PREFECT_HOME"] = str(Workspace.at(workspace).prefect_home)
    command = [sys.executable, "-m", "flows.cli", "run", "--workspace", workspace, "--json", "--quiet"]
    done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sweep point in {workspace} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot_sweep(rows: list[dict], keys: list[str]) -> bytes:
    """The evaluation metric (`PLOTS`: accuracy, perplexity or embedding agreement) against
    the FLOPs that remain (one point per sweep run, labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ordered = sorted(rows, key=lambda r: r.get("flops_ratio") or 0)
    ylabel, series = next(((y, s) for y, s in PLOTS if any(r.get(s[0][0]) is not None for r in rows)), ("", ()))
    xs = [_number(r.get("flops_ratio")) for r in ordered]
    for (column, legend), style in zip(series, ("o-", "s--")):
        ax.plot(xs, [_number(r.get(column)) for r in ordered], style, label=legend)
    for row in ordered if series else ():
        label = ", ".join(str(row[k]) for k in keys)
        ax.annotate(label, (_number(row.get("flops_ratio")), _number(row.get(series[0][0]))), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.margins(x=0.12, y=0.1)
    ax.set_xlabel("FLOPs remaining (pruned / dense)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} against remaining FLOPs, one point per value of {', '.join(keys)}", fontsize=10)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _number(value: object) -> float:
    return float("nan") if value is None else float(value)


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
