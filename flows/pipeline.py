"""Prefect flows over the DVC stages.

The task graph is derived from dvc.yaml (`tasks.dag`): one Prefect task per stage, run
in dependency order. A stage runs when `dvc status` reported it changed or an upstream
stage ran in this flow; otherwise it finishes in a `Skipped` state without touching
DVC. Each run opens an MLflow parent run that the stage processes nest under, and ends
with a Prefect markdown artifact summarising what ran. While it runs, each stage's start,
end and live output go to the `RunView` that `modhifi run` installs with `watched_by`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run, task_run
from prefect.states import Completed

from flows import dvc
from flows.console import RunView
from modhifi_core.errors import InputError
from tasks import tracking
from tasks.dag import Stage, prepare_workspace, topological_order, upstream_closure
from tasks.inputs import refresh_inputs
from tasks.workspace import Workspace

# Flows users ask for: the stages each one targets (their upstream stages come along).
TARGETS = {
    "pipeline": None,  # every stage
    "compress": {"prune", "evaluate"},
    "unlearn": {"unlearn", "evaluate"},
}


# Where stage_task reports (a module global, not a task argument: Prefect hashes and
# records task inputs). Silent unless `modhifi run` installs a view.
_view = RunView(enabled=False)


@contextmanager
def watched_by(view: RunView) -> Iterator[RunView]:
    """Show the stages of the flows run inside this block on `view`."""
    global _view
    previous, _view = _view, view
    try:
        yield view
    finally:
        _view = previous


# `dvc status` started ahead (see `check_changes_ahead`), by workspace root; used once.
_status_ahead: dict[str, Future] = {}


def check_changes_ahead(root: Path) -> None:
    """Start `dvc status` for `root` now, in a thread: it then runs while Prefect starts its
    temporary server (seconds of CPU each, on separate cores). The next flow run on `root`
    uses the answer. Call it only while holding the workspace lock."""
    executor = ThreadPoolExecutor(max_workers=1)
    _status_ahead[str(Path(root).resolve())] = executor.submit(dvc.status, root)
    executor.shutdown(wait=False)  # the submitted call still runs to the end


def _status(root: Path) -> dvc.Status:
    ahead = _status_ahead.pop(str(Path(root).resolve()), None)
    return ahead.result() if ahead is not None else dvc.status(root)


# Why an output dvc.lock records is not as it recorded it.
_DAMAGE = {
    "deleted": "is missing though dvc.lock records it (a run was interrupted?)",
    "modified": "differs from the hash dvc.lock records (tampered with, or edited by hand)",
}


def restore_damaged_outputs(ws: Workspace, stages: dict, status: dvc.Status, force: bool) -> dvc.Status:
    """Say, one line each (even with --quiet), which outputs recorded in dvc.lock are
    missing or altered, then put them back from DVC's cache, so nothing is built on a
    tampered artifact or rebuilt without a word. Returns the status after the repair
    (with `force` every stage rebuilds anyway: only the report)."""
    for paths in status.damaged.values():
        for path, state in sorted(paths.items()):
            action = "--force rebuilds it" if force else "restoring it from DVC's cache"
            _view.warn(f"{path} {_DAMAGE[state]}: {action}")
    if force or not status.damaged:
        return status
    outs = {stage: stages[stage].outs for stage in status.damaged if stage in stages}
    for stage in sorted(dvc.restore_outputs(ws.root, outs)):
        _view.warn(f"{stage}: its outputs are not in DVC's cache; the stage runs again")
    return dvc.status(ws.root)


def _show_output(text: str, complete: bool) -> None:
    if not dvc.bookkeeping(text):
        _view.output(text, complete)


def _retry_unless_bad_input(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's callback signature
    try:
        state.result()
    except dvc.StageFailed as exc:
        return not exc.bad_input and exc.signal is None
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


@task(task_run_name="{name}", retries=1, retry_delay_seconds=2, retry_condition_fn=_retry_unless_bad_input)
def stage_task(name: str, root: str, must_run: bool, force: bool, env: dict, outs: tuple[str, ...]) -> object:
    """Reproduce one DVC stage, or finish as Skipped when nothing it depends on changed."""
    if not must_run:
        _view.finished(name, "skipped")
        return Completed(name="Skipped", message=f"{name}: unchanged", data={"stage": name, "ran": False})
    _view.started(name, task_run.run_count)
    start = time.perf_counter()
    try:
        ran = dvc.reproduce(Path(root), name, env, force, on_output=_show_output, outs=outs)
    except dvc.StageFailed as exc:
        reason = f"killed by signal {exc.signal}" if exc.signal else f"exit {exc.code}"
        _view.failed(name, time.perf_counter() - start, reason)
        raise
    # The stage process left its MLflow record; log it here, where MLflow is already loaded.
    tracking.replay_pending(Workspace.at(root), name, env.get("MODHIFI_PARENT_RUN_ID"))
    seconds = time.perf_counter() - start
    _view.finished(name, "ran" if ran else "unchanged", seconds)
    get_run_logger().info("%s %s in %.1f s", name, "ran" if ran else "was up to date", seconds)
    return {"stage": name, "ran": ran, "seconds": seconds}


def flow_order(stages: dict[str, Stage], flow_name: str) -> list[str]:
    """The stages flow `flow_name` runs, in order: its targets that this kind's pipeline
    has, and everything upstream of them."""
    wanted = TARGETS[flow_name]
    if wanted is not None:
        wanted = wanted & set(stages)
        if wanted <= {"evaluate"}:
            raise InputError(f"the {flow_name} flow does not apply to this model: its pipeline has no such stage")
    selected = set(stages) if wanted is None else upstream_closure(stages, wanted)
    return [name for name in topological_order(stages) if name in selected]


def run_stages(ws: Workspace, flow_name: str, force: bool = False) -> dict:
    """Body shared by the flows: returns `{"ran": [...], "skipped": [...], "seconds": {...}}`."""
    stages = prepare_workspace(ws)  # a no-op when `modhifi run` did it; needed for sweeps and scheduled runs
    order = flow_order(stages, flow_name)
    _view.plan(order)
    # The model folder's and texts' hashes (dvc.yaml deps) before DVC compares.
    refresh_inputs(ws, ws.params())
    status = restore_damaged_outputs(ws, stages, _status(ws.root), force)
    changed = set(order) if force else status.changed
    lost = tracking.recreate_lost_store(ws)
    if lost:
        _view.warn(lost)
    closed = tracking.close_interrupted_runs(ws)
    if closed:
        _view.note(f"MLflow: {closed} run(s) of an interrupted run marked FAILED")
    if force:
        _view.note(f"--force: running all {len(order)} stages")
    else:
        _view.note(f"{len(changed & set(order))} of {len(order)} stages changed (dvc status)")
    summary: dict = {"ran": [], "skipped": [], "seconds": {}, "flow": flow_name, "order": order}
    parent = _start_parent_run(ws, flow_name) if changed & set(order) else None
    env = {"MODHIFI_FLOW_RUN_ID": str(flow_run.get_id() or "none"), "MODHIFI_WORKSPACE": str(ws.root)}
    env[tracking.DEFER] = "1"
    if parent:
        env["MODHIFI_PARENT_RUN_ID"] = parent
    executed: set[str] = set()
    summary["failed"] = True  # until every stage returned
    try:
        for name in order:
            must_run = name in changed or bool(executed.intersection(stages[name].upstream))
            state = stage_task(name, str(ws.root), must_run, force, env, stages[name].outs, return_state=True)
            result = state.result()
            if result["ran"]:
                executed.add(name)
                summary["ran"].append(name)
                summary["seconds"][name] = result["seconds"]
            else:
                summary["skipped"].append(name)
        summary["failed"] = False
    finally:
        if parent:
            _end_parent_run(ws, parent, summary)
    create_markdown_artifact(
        markdown=summary_markdown(ws, summary), key=f"modhifi-{flow_name}", description="modhifi run summary"
    )
    return summary


@flow(name="modhifi-pipeline", log_prints=True)
def pipeline(root: str = ".", force: bool = False) -> dict:
    """Every stage: train/import the base model, synthesise, score, prune, unlearn, fine-tune, evaluate, report."""
    return run_stages(Workspace.at(root), "pipeline", force)


@flow(name="modhifi-compress", log_prints=True)
def compress(root: str = ".") -> dict:
    """Only what pruning needs, then evaluation."""
    return run_stages(Workspace.at(root), "compress")


@flow(name="modhifi-unlearn", log_prints=True)
def unlearn(root: str = ".") -> dict:
    """Only what unlearning needs, then evaluation."""
    return run_stages(Workspace.at(root), "unlearn")


FLOWS = {"pipeline": pipeline, "compress": compress, "unlearn": unlearn}


def _start_parent_run(ws: Workspace, flow_name: str) -> str:
    experiment_id = tracking.configure(ws)
    client = mlflow.tracking.MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=f"{flow_name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={**tracking.base_tags(), "prefect_flow_run_id": str(flow_run.get_id() or "none"), "flow": flow_name},
    )
    for key, value in tracking.flatten(ws.params().present()).items():
        client.log_param(run.info.run_id, key, value)
    tracking.remember_run(ws, run.info.run_id, run.info.run_name)
    return run.info.run_id


def _end_parent_run(ws: Workspace, run_id: str, summary: dict) -> None:
    client = mlflow.tracking.MlflowClient()
    for stage, seconds in summary["seconds"].items():
        client.log_metric(run_id, f"seconds.{stage}", seconds)
    evaluation = ws.artifact("evaluation")
    if evaluation.exists():
        for key, value in json.loads(evaluation.read_text()).items():
            if isinstance(value, (int, float)):
                client.log_metric(run_id, key, float(value))
    client.set_tag(run_id, "ran", ",".join(summary["ran"]) or "none")
    client.set_tag(run_id, "skipped", ",".join(summary["skipped"]) or "none")
    report = ws.artifact("report")
    if report.is_dir():
        client.log_artifacts(run_id, str(report), artifact_path="report")
    status = "FINISHED" if not summary.get("failed") else "FAILED"
    client.set_terminated(run_id, status=status)


def summary_markdown(ws: Workspace, summary: dict) -> str:
    lines = [f"# modhifi {summary['flow']} run", "", "| stage | status | seconds |", "|---|---|---|"]
    for stage in summary["ran"]:
        lines.append(f"| {stage} | ran | {summary['seconds'][stage]:.1f} |")
    for stage in summary["skipped"]:
        lines.append(f"| {stage} | skipped (unchanged) | |")
    evaluation = ws.artifact("evaluation")
    if evaluation.exists():
        lines += ["", "| metric | value |", "|---|---|"]
        for key, value in json.loads(evaluation.read_text()).items():
            if isinstance(value, (int, float)):
                lines.append(f"| {key} | {value:.4g} |")
    return "\n".join(lines) + "\n"
