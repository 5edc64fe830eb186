"""`modhifi sweep` over the real pipeline: one row per value, a plot, params restored; with
a cluster, the points at once in workspace copies."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml
from pipeline_workspace import dvc_status, isolated_env, make_workspace, modhifi, write_params


@pytest.mark.slow
def test_sweep_of_target_flops_writes_one_table_and_restores_the_workspace(tmp_path):
    root = make_workspace(tmp_path / "ws")
    env = isolated_env(tmp_path)
    params_before = (root / "params.yaml").read_text()
    result = modhifi(root, env, "sweep", "prune.target_flops=0.4,0.7", "--workspace", str(root), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = json.loads(result.stdout.strip().splitlines()[-1])
    rows = sweep["rows"]
    assert [row["prune.target_flops"] for row in rows] == [0.4, 0.7]
    for row in rows:
        assert row["flops_ratio"] == pytest.approx(row["prune.target_flops"], abs=0.02)
    assert "train_base" not in rows[1]["ran"]  # the second point reuses everything above prune
    folder = root / "outputs/sweeps"
    name = sweep["name"]
    assert (folder / f"{name}.png").stat().st_size > 0
    assert (folder / f"{name}.csv").read_text().count("\n") == 3
    assert (root / "params.yaml").read_text() == params_before
    assert dvc_status(root, env) == {}


def _watch_concurrent_points(parent: Path, seen: dict, stop: threading.Event) -> None:
    """Record the most point runs that held their own workspace's lock at one moment."""
    while not stop.is_set():
        held = len(list(parent.glob(".ws-sweep-*/point-*/.modhifi-run.lock.pid")))
        seen["most"] = max(seen["most"], held)
        time.sleep(0.2)


@pytest.mark.slow
def test_sweep_on_a_local_cluster_runs_its_points_at_once_in_workspace_copies(tmp_path):
    root = make_workspace(tmp_path / "ws")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["cluster"] = {"address": "local", "workers": 2}
    write_params(root, params)
    params_before = (root / "params.yaml").read_text()
    seen, stop = {"most": 0}, threading.Event()
    watcher = threading.Thread(target=_watch_concurrent_points, args=(tmp_path, seen, stop), daemon=True)
    watcher.start()
    try:
        result = modhifi(
            root, isolated_env(tmp_path), "sweep", "prune.target_flops=0.4,0.7", "--workspace", str(root), "--json"
        )
    finally:
        stop.set()
        watcher.join()
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])["rows"]
    assert [row["prune.target_flops"] for row in rows] == [0.4, 0.7]
    for row in rows:
        assert row["flops_ratio"] == pytest.approx(row["prune.target_flops"], abs=0.02)
        assert "train_base" in row["ran"]  # each point ran in a fresh copy, not after the other
    assert seen["most"] == 2  # both points' runs were under way at the same moment
    assert (root / "params.yaml").read_text() == params_before
    assert not (root / "outputs/pruned").exists()  # the workspace itself was not written...
    assert (root / "outputs/sweeps").is_dir()  # ...but for the table
    assert not list(tmp_path.glob(".ws-sweep-*"))  # the copies are gone
