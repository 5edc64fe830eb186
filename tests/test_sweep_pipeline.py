"""`modhifi sweep` over the real pipeline: one row per value, a plot, params restored."""

from __future__ import annotations

import json

import pytest
from pipeline_workspace import dvc_status, isolated_env, make_workspace, modhifi


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
