"""Faults injected into the pipeline (issue 15), against the real Prefect, DVC and MLflow.

One finished workspace on tiny settings. For each of the nine stages: its adapter is
touched so `modhifi run` must run it, the stage's process is killed with SIGKILL mid-work
(at 60% of the time the stage took in the first run), and then every output dvc.lock
names must be back with the md5 it records (`dvc status` clean once the touch is undone),
dvc.lock unchanged, no temporary file left, the MLflow parent run FAILED, and the run's
last line must say which stage was killed. Then a whole `modhifi run` is killed (process
group) inside `prune`: the next run reports the missing output, restores it from DVC's
cache, closes the orphaned MLflow run as FAILED and completes.

Slow: about 8 minutes on the 2-core machine (ten Prefect start-ups).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from pipeline_workspace import REPO, dvc_status, isolated_env, make_workspace, run_pipeline, run_pipeline_showing

pytestmark = pytest.mark.slow

ALL = ["train_base", "synthesize", "collect", "score", "prune", "unlearn", "finetune", "evaluate", "report"]
KILL_AT = 0.6  # of the stage's duration in the first run: after DVC removed its outputs, before it wrote them


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    home = tmp_path_factory.mktemp("faults")
    root = make_workspace(home / "ws")
    env = isolated_env(home)
    summary = run_pipeline(root, env)
    assert sorted(summary["ran"]) == sorted(ALL)
    return root, env, summary["stage_seconds"]


def _start_run(root, env, *extra):
    path = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "--workspace", str(root), *extra],
        cwd=root,
        env={**env, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so the whole run can be killed
    )


def _stage_process(run: subprocess.Popen, stage: str, timeout: float = 600) -> psutil.Process:
    """The `modhifi stage STAGE` process DVC started under `run`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(run.pid).children(recursive=True):
            try:
                cmdline = child.cmdline()
            except psutil.NoSuchProcess:
                continue
            if "flows.cli" in cmdline and cmdline[-2:] == ["stage", stage]:
                return child
        assert run.poll() is None, f"the run ended before stage {stage} started"
        time.sleep(0.05)
    raise AssertionError(f"stage {stage} did not start within {timeout} s")


def _kill_mid_work(process: psutil.Process, seconds: float) -> None:
    time.sleep(max(0.0, process.create_time() + KILL_AT * seconds - time.time()))
    process.send_signal(signal.SIGKILL)


def _temporary_files(root):
    leftovers = [*(root / "outputs").rglob(".*.tmp"), *(root / "outputs").rglob(".*.old")]
    return sorted(p.relative_to(root) for p in leftovers)


def _newest_parent_run(root):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("modhifi")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=50)
    return next(r for r in runs if "flow" in r.data.tags)


@pytest.mark.parametrize("stage", ALL)
def test_sigkill_mid_stage_leaves_outputs_and_lock_intact(finished, stage):
    root, env, seconds = finished
    lock = (root / "dvc.lock").read_text()
    adapter = root / "tasks" / f"{stage}.py"
    original = adapter.read_text()
    adapter.write_text(original + "\n# touched by the fault test: the stage must run\n")
    try:
        run = _start_run(root, env)
        _kill_mid_work(_stage_process(run, stage), seconds[stage])
        _, stderr = run.communicate(timeout=600)
    finally:
        adapter.write_text(original)
    assert run.returncode == 1, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"error: stage {stage} was killed by SIGKILL (out of memory, or kill -9); "
        "its previous outputs are back in place"
    )
    assert (root / "dvc.lock").read_text() == lock
    assert dvc_status(root, env) == {}  # every output's md5 is the lock's again
    assert _temporary_files(root) == []
    assert _newest_parent_run(root).info.status == "FAILED"


def test_killed_run_is_repaired_and_reported_by_the_next_run(finished):
    root, env, seconds = finished
    run = _start_run(root, env, "--force")
    _kill_mid_work(_stage_process(run, "prune"), seconds["prune"])
    os.killpg(run.pid, signal.SIGKILL)  # the flow, DVC, the stage and Prefect's server at once
    run.communicate(timeout=60)
    interrupted = _newest_parent_run(root)
    assert interrupted.info.status == "RUNNING"  # nobody was left to close it
    assert not (root / "outputs/pruned/model.pt").exists()  # DVC had removed it for the rerun

    summary, shown = run_pipeline_showing(root, env)
    missing = "warning: outputs/pruned/model.pt is missing though dvc.lock records it"
    assert any(line.startswith(missing) for line in shown.splitlines())
    assert summary["ran"] == []  # restored from the cache: nothing to rebuild (same seed, same bytes)
    assert dvc_status(root, env) == {}
    assert _temporary_files(root) == []
    from mlflow.tracking import MlflowClient

    closed = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").get_run(interrupted.info.run_id)
    assert closed.info.status == "FAILED" and closed.data.tags["modhifi.interrupted"] == "true"
