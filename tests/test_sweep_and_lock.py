"""Sweep assignments are parsed, typed and validated before anything runs; the table shows
the metrics of the model kind that ran; the workspace lock refuses a second holder and is
released when its holder dies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.locking import pid_file_of, workspace_lock
from flows.sweep import apply, parse_assignments, plot_sweep, points, sweep_rows
from modhifi_core.errors import InputError

REPO = Path(__file__).resolve().parent.parent
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_grid_is_typed_and_a_cartesian_product():
    grid = parse_assignments(["prune.target_flops=0.3,0.5", "prune.method=modhifi,l2"], PARAMS)
    assert grid == {"prune.target_flops": [0.3, 0.5], "prune.method": ["modhifi", "l2"]}
    assert len(points(grid)) == 4
    assert apply(PARAMS, {"prune.target_flops": 0.3})["prune"]["target_flops"] == 0.3
    assert PARAMS["prune"]["target_flops"] == 0.5  # apply does not modify its input


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("prune.target_flops", "must look like"),
        ("prune.target_flop=0.3", "unknown parameter 'prune.target_flop'"),
        ("prune.target_flops=0.3,1.5", "prune.target_flops"),
        ("unlearn.method=modhifi,forget", "unlearn.method"),
    ],
)
def test_bad_assignments_are_refused_before_running(assignment, message):
    with pytest.raises(InputError, match=message):
        parse_assignments([assignment], PARAMS)


def _summary(**metrics) -> dict:
    return {"metrics": {"flops_ratio": 0.8, "params_ratio": 0.8, "latency_speedup": 1.1, **metrics}, "ran": ["prune"]}


ZOO = {"pruned_test_accuracy": 90.0, "UA": 99.0, "RA": 95.0, "TA": 91.0, "MIA": 80.0}
LANGUAGE = {"causal LM": {"dense_perplexity": 15.6, "perplexity": 17.0, "perplexity_ratio": 1.09}}
LANGUAGE["encoder"] = {"mean_cosine": 0.96, "min_cosine": 0.8, "top10_agreement": 0.8}


@pytest.mark.parametrize(
    ("metrics", "columns"),
    [
        (ZOO, ["pruned_test_accuracy", "UA", "RA", "TA", "MIA"]),
        (LANGUAGE["causal LM"], ["perplexity", "perplexity_ratio"]),
        (LANGUAGE["encoder"], ["mean_cosine", "top10_agreement"]),
    ],
    ids=["classifier", "causal LM", "encoder"],
)
def test_sweep_table_shows_the_metrics_of_the_model_kind(metrics, columns):
    grid = [{"language.target_params": 0.7}, {"language.target_params": 0.9}]
    second = {key: value * 0.9 for key, value in metrics.items()}
    rows = sweep_rows(grid, [_summary(**metrics), _summary(**second, flops_ratio=0.9)])
    shown = set(rows[0]) - {"language.target_params", "flops_ratio", "params_ratio", "latency_speedup", "ran"}
    assert shown == set(columns)  # no column that no point has
    assert rows[1][columns[0]] == pytest.approx(0.9 * metrics[columns[0]])
    assert plot_sweep(rows, ["language.target_params"]).startswith(b"\x89PNG")


def test_a_metric_one_point_lacks_is_empty_in_its_row():
    rows = sweep_rows([{"p": 1}, {"p": 2}], [_summary(perplexity=17.0), _summary()])
    assert rows[0]["perplexity"] == 17.0 and rows[1]["perplexity"] is None
    assert plot_sweep(rows, ["p"]).startswith(b"\x89PNG")


def test_lock_refuses_a_second_holder_and_names_it(tmp_path):
    lock = tmp_path / ".modhifi-run.lock"
    code = (
        "import pathlib, time\n"
        "from flows.locking import pid_file_of, workspace_lock\n"
        f"with workspace_lock(pathlib.Path({str(lock)!r})):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(InputError, match=f"pid {holder.pid}"), workspace_lock(lock, wait_seconds=1.0):
            pass
        assert time.monotonic() - start >= 1.0  # it waited before refusing
    finally:
        holder.kill()
        holder.wait()
    assert pid_file_of(lock).read_text() == str(holder.pid)  # what a killed holder leaves: a stale pid
    with workspace_lock(lock):  # ... but nothing locked, and the next holder names itself
        assert pid_file_of(lock).read_text() == str(os.getpid())
    assert not pid_file_of(lock).exists()  # a holder that finishes takes its pid with it


def test_a_point_workspace_is_a_copy_with_its_params_and_the_shared_cache(tmp_path):
    """What a concurrent point runs in: the workspace's files but its version control, run
    state, tracking stores, DVC cache and earlier sweeps; its own params.yaml (statistics
    in its own process); DVC without git, on the workspace's cache."""
    from flows.dvc import dvc, ensure_dvc_project
    from flows.sweep import point_workspace

    root = tmp_path / "ws"
    for name, text in {
        "dvc.yaml": "stages: {}\n",
        "params.yaml": "old: 1\n",
        "tasks/prune.py": "code\n",
        "tasks/__pycache__/prune.pyc": "",
        "outputs/pruned/model.pt": "weights",
        "outputs/sweeps/sweep-x.csv": "old table",
        "mlflow.db": "",
        ".prefect/db": "",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    ensure_dvc_project(root)  # without git
    (root / ".git").mkdir()  # stands for the user's repository: not copied
    (root / ".dvc/cache/files").mkdir(parents=True)
    params = {**PARAMS, "cluster": {"address": "local", "workers": 2}}
    copy = point_workspace(root, tmp_path / "sweep/point-0", apply(params, {"prune.target_flops": 0.3}))
    files = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()}
    assert {"dvc.yaml", "tasks/prune.py", "outputs/pruned/model.pt"} <= files
    for gone in ("tasks/__pycache__", "outputs/sweeps", "mlflow.db", ".git", ".prefect", ".dvc/cache", ".dvc/tmp"):
        assert not (copy / gone).exists(), gone
    written = yaml.safe_load((copy / "params.yaml").read_text())
    assert written["prune"]["target_flops"] == 0.3 and written["cluster"] == {"address": None, "workers": 2}
    cache = dvc(copy, "cache", "dir")
    assert cache.returncode == 0 and cache.stdout.strip() == str(root / ".dvc/cache")
    assert (root / "params.yaml").read_text() == "old: 1\n"  # the workspace itself untouched


def test_where_the_points_run(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from flows.sweep import sweep_executor

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))  # cluster.address: null
    with sweep_executor(tmp_path, None) as executor:
        assert executor is None  # one after the other, as before
    with sweep_executor(tmp_path, 2) as executor:
        assert isinstance(executor, ThreadPoolExecutor) and executor._max_workers == 2
    with pytest.raises(InputError, match="--workers must be at least 1, got 0"):
        with sweep_executor(tmp_path, 0):
            pass
