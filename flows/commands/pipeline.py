"""`modhifi run`, `modhifi stage NAME` and `modhifi serve`: the pipeline's commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
import yaml

from flows.console import console, emit, format_value

WORKSPACE_HELP = "The pipeline workspace (holds dvc.yaml and params.yaml)."


def run(
    flow_name: str = typer.Option("pipeline", "--flow", help="pipeline (all stages), compress or unlearn."),
    workspace: Path = typer.Option(Path("."), help=WORKSPACE_HELP),
    force: bool = typer.Option(False, help="Re-run every stage even if unchanged."),
    wait: float = typer.Option(0.0, min=0.0, help="Seconds to wait for another run in this workspace to finish."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result, not the stages as they run."),
) -> None:
    """Run the pipeline: stages whose code, params or inputs changed run, the rest are skipped.

    Each stage's start, end and live progress go to stderr (stdout holds only the result:
    the tables, or with --json the one JSON line); --quiet prints none of it.
    """
    from flows.console import RunView
    from flows.dvc import StageFailed, ensure_dvc_project
    from flows.locking import workspace_lock
    from modhifi_core.errors import InputError
    from tasks.workspace import Workspace

    ws = Workspace.at(workspace)
    # invalid params, a source of no known kind, a params.yaml without a key a stage
    # reads: nothing runs (before Prefect starts); the kind's dvc.yaml is written
    from kinds import kind_of
    from tasks.dag import prepare_workspace

    params = ws.params()
    kind_of(params.model.source, ws.root).check_run(params, ws.root)  # its inputs too: before anything is written
    check_room(ws.root)
    prepare_workspace(ws)
    _embedded_prefect(ws)
    # Stage processes write to DVC's pipe, not a terminal: ask them for their progress
    # bars explicitly (MODHIFI_PROGRESS=0 from the caller still wins).
    os.environ["MODHIFI_PROGRESS"] = "0" if quiet else os.environ.get("MODHIFI_PROGRESS", "1")
    view = RunView(enabled=not quiet)
    from flows.pipeline import FLOWS, check_changes_ahead, watched_by

    if flow_name not in FLOWS:
        raise InputError(f"unknown flow {flow_name!r}; choose one of {', '.join(FLOWS)}")
    ensure_dvc_project(ws.root)
    from tasks.inputs import refresh_inputs

    with workspace_lock(ws.run_lock, wait), watched_by(view):
        refresh_inputs(ws, params)  # the model folder's and texts' hashes, before DVC compares its deps
        check_changes_ahead(ws.root)  # with --force too: damaged outputs are reported
        view.note(_prefect_note())
        try:
            summary = FLOWS[flow_name](root=str(ws.root), **({"force": force} if flow_name == "pipeline" else {}))
        except StageFailed as exc:
            if exc.bad_input:
                raise InputError(str(exc)) from None
            print(f"error: {exc}", file=sys.stderr)  # a crash or a kill: exit 1, not bad input
            raise typer.Exit(1) from None
    result = _run_result(ws, summary)
    if as_json:
        emit(result, True, "")
        return
    _print_summary(ws, result)


# The least room a run needs before its first stage: Prefect's and MLflow's SQLite
# databases (about 1.6 MB each after one tiny run, growing with every run) and DVC's files.
MIN_ROOM_BYTES = 64 << 20


def check_room(root: Path) -> None:
    """`InputError` (one line) when a file-size limit (`ulimit -f`) or the free space of
    `root`'s disk is below `MIN_ROOM_BYTES`: Prefect's server would fail its own database
    write first, inside its process, which modhifi cannot name (it restarts or answers
    HTTP 500). A floor, not a promise that a run fits: a stage that finds the disk full
    names the file it could not write (`modhifi_core.safe_io`)."""
    import resource
    import shutil

    from modhifi_core.errors import InputError

    floor = f"{MIN_ROOM_BYTES >> 20} MiB"
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and limit < MIN_ROOM_BYTES:
        raise InputError(
            f"files are limited to {limit >> 10} KiB here (ulimit -f): {root / '.prefect' / 'prefect.db'} and "
            f"{root / 'mlflow.db'} could not be written (a run needs files of {floor} at least); raise the limit"
        )
    free = shutil.disk_usage(root).free
    if free < MIN_ROOM_BYTES:
        raise InputError(f"the disk of {root} has {free >> 20} MiB free: a run needs {floor} at least")


def stage(
    name: str = typer.Argument(..., help="Stage name from dvc.yaml."),
    workspace: Path = typer.Option(Path("."), help=WORKSPACE_HELP),
) -> None:
    """Run one stage in this process (what dvc.yaml's commands call)."""
    from tasks.runner import run_stage
    from tasks.workspace import Workspace

    metrics = run_stage(name, Workspace.at(workspace))
    emit(metrics, True, "")


def serve(
    workspace: Path = typer.Option(Path("."), help=WORKSPACE_HELP),
    cron: str | None = typer.Option(None, help="Cron schedule (default: schedule.cron in params.yaml)."),
    name: str = typer.Option("nightly", help="Deployment name."),
) -> None:
    """Register the pipeline as a scheduled deployment on a Prefect server and serve it."""
    from modhifi_core.errors import InputError
    from tasks.workspace import Workspace

    if not os.environ.get("PREFECT_API_URL"):
        raise InputError(
            "modhifi serve needs a Prefect server: run `prefect server start` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` first"
        )
    ws = Workspace.at(workspace)
    params = ws.params()
    from prefect.schedules import Cron

    try:
        schedule = Cron(cron or params.schedule.cron, timezone=params.schedule.timezone)
    except ValueError as exc:
        raise InputError(f"schedule {cron or params.schedule.cron!r} is not a valid cron expression: {exc}") from None
    _check_reachable(os.environ["PREFECT_API_URL"])
    from flows.pipeline import pipeline

    console.print(f"serving deployment modhifi-pipeline/{name} on {schedule.cron} ({params.schedule.timezone})")
    pipeline.serve(name=name, schedules=[schedule], parameters={"root": str(ws.root)})


def _check_reachable(api_url: str) -> None:
    """`InputError` unless the Prefect server at `api_url` answers its health check (in
    seconds, not after Prefect's retries)."""
    import httpx

    from modhifi_core.errors import InputError

    try:
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=5).raise_for_status()
    except (httpx.HTTPError, ValueError) as exc:
        raise InputError(
            f"PREFECT_API_URL {api_url} does not answer ({type(exc).__name__}): start `prefect server start` "
            "or correct the address"
        ) from None


def _embedded_prefect(ws: object) -> None:
    """Embedded default: an ephemeral Prefect server whose database lives in the workspace
    (unless the user points PREFECT_API_URL or PREFECT_HOME elsewhere). Must run before
    prefect is imported: it reads its settings at import."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(ws.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary server needs more than Prefect's 20 s to start on a loaded machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["DVC_NO_ANALYTICS"] = os.environ.get("DVC_NO_ANALYTICS") or "1"  # also flows.dvc's default
    # Failures reach the user as modhifi's one error line (and the Prefect UI); Prefect's
    # own traceback logging would bury that line. MLflow's INFO lines (creating its tables)
    # are not modhifi's to show either.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    # The temporary server's own services log too (e.g. an event flush it retries when its
    # SQLite database is busy); they are Prefect's to record, not the run's output.
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if not os.environ.get("PREFECT_API_URL"):
        from flows.embedded_server import guard

        guard()  # the temporary server: out of reach of a Ctrl-C, gone with its parent


def _prefect_note() -> str:
    if os.environ.get("PREFECT_API_URL"):
        return f"Prefect: {os.environ['PREFECT_API_URL']}"
    return "Prefect: starting a temporary local server (set PREFECT_API_URL to use a running one)"


def _run_result(ws: object, summary: dict) -> dict:
    evaluation = ws.artifact("evaluation")
    metrics = json.loads(evaluation.read_text()) if evaluation.exists() else {}
    return {
        "ran": summary["ran"],
        "skipped": summary["skipped"],
        "stage_seconds": summary["seconds"],
        "order": summary["order"],
        "metrics": metrics,
        "skipped_reasons": skip_reasons(ws),
        "lineage": _lineage_file(ws),
        "workspace": str(ws.root),
    }


def skip_reasons(ws: object) -> dict[str, str]:
    """Stage -> why it does not apply to this run's kind of model (`ModelKind.skipped`:
    such a stage is not in the kind's dvc.yaml)."""
    from kinds import kind_of

    return dict(kind_of(ws.params().model.source, ws.root).skipped)


def _lineage_file(ws: object) -> str:
    """Where a person reads the run's lineage: the pruned Hugging Face folder's
    modhifi.json for a language model, else `modhifi lineage` on the final checkpoint."""
    folder = ws.artifact("pruned_hf")
    if (folder / "modhifi.json").is_file():
        return str((folder / "modhifi.json").relative_to(ws.root))
    return "modhifi lineage outputs/final/model.pt"


SUMMARY_ROWS = [
    ("base model test accuracy (%)", "base_test_accuracy"),
    ("pruned test accuracy (%)", "pruned_test_accuracy"),
    ("dense perplexity (held-out text)", "dense_perplexity"),
    ("pruned perplexity (held-out text)", "perplexity"),
    ("perplexity ratio (pruned / dense)", "perplexity_ratio"),
    ("mean cosine, pruned vs dense sentence embedding", "mean_cosine"),
    ("top-10 neighbour agreement (held-out sentences)", "top10_agreement"),
    ("pruned FLOPs / dense FLOPs", "flops_ratio"),
    ("pruned params / dense params", "params_ratio"),
    ("latency speed-up (dense / pruned, CPU)", "latency_speedup"),
    ("class to forget", "forget_class"),
    ("UA: 100 - forget accuracy (%)", "UA"),
    ("RA: retain accuracy (%)", "RA"),
    ("TA: test accuracy without the class (%)", "TA"),
    ("MIA-Efficacy (%)", "MIA"),
    ("UA after BN recalibration on retained data (%)", "UA_after_bn_recalibration"),
    ("UA after the relearning attack on retained data (%)", "UA_after_relearning"),
    ("feature probe: held-out forget-class samples recognised (%)", "probe_forget_accuracy"),
    ("feature probe: held-out retained-class samples recognised (%)", "probe_retain_accuracy"),
    ("forget-data relearning: SGD steps until > 50% recognised", "relearn_forget_steps"),
    ("the same after resetting its class row of the classifier", "relearn_forget_steps_after_head_reset"),
    ("the same, the model before unlearning with its class row reset", "head_reset_relearn_forget_steps"),
    ("verdict of the forgetting audit", "forgetting_verdict"),
    ("final model test accuracy, retained classes (%)", "final_TA"),
]


def _print_summary(ws: object, result: dict) -> None:
    from rich.table import Table

    table = Table(title="modhifi pipeline")
    table.add_column("result")
    table.add_column("value", justify="right")
    for label, key in SUMMARY_ROWS:
        if key in result["metrics"]:
            table.add_row(label, format_value(result["metrics"][key]))
    console.print(table)
    stages = Table(title="stages")
    stages.add_column("stage")
    stages.add_column("status")
    stages.add_column("seconds", justify="right")
    reasons = result["skipped_reasons"]
    for name in result["order"]:
        status = f"skipped: {reasons[name]}" if name in reasons else None
        if name in result["stage_seconds"]:
            stages.add_row(name, status or "ran", f"{result['stage_seconds'][name]:.1f}")
        else:
            stages.add_row(name, status or "skipped (unchanged)", "")
    console.print(stages)
    root = result["workspace"]
    lineage = result["lineage"]
    console.print(
        "\nOpen the results:\n"
        f"  lineage report:  {root}/outputs/report/report.md  (or `{lineage}`)\n"
        f"  MLflow UI:       .venv/bin/mlflow ui --backend-store-uri sqlite:///{root}/mlflow.db\n"
        f"  Prefect UI:      PREFECT_HOME={root}/.prefect .venv/bin/prefect server start\n"
        "  DVC:             .venv/bin/dvc metrics show; .venv/bin/dvc plots show"
    )


def sweep(
    assignments: list[str] = typer.Argument(..., help="section.key=v1,v2,... (several: their cartesian product)."),
    workspace: Path = typer.Option(Path("."), help=WORKSPACE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on the last line."),
    workers: int | None = typer.Option(
        None, "--workers", help="Run N points at once, each in a workspace copy (default: on cluster.address if set)."
    ),
) -> None:
    """Run the pipeline once per value and write one comparison table and plot."""
    from flows.dvc import ensure_dvc_project
    from flows.locking import workspace_lock
    from flows.sweep import run_sweep, sweep_executor
    from tasks.workspace import Workspace

    ws = Workspace.at(workspace)
    ws.params()
    from flows.sweep import parse_assignments

    parse_assignments(assignments, yaml.safe_load((ws.root / "params.yaml").read_text()))  # before anything is written
    _embedded_prefect(ws)
    from flows.pipeline import pipeline

    ensure_dvc_project(ws.root)
    with workspace_lock(ws.run_lock), sweep_executor(ws.root, workers) as executor:
        result = run_sweep(ws.root, assignments, lambda: _run_result(ws, pipeline(root=str(ws.root))), executor)
    if as_json:
        emit(result, True, "")
        return
    from rich.table import Table

    table = Table(title=f"sweep {result['name']} (outputs/sweeps/{result['name']}.csv, .png)")
    columns = list(result["rows"][0]) if result["rows"] else []
    for column in columns:
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(*(format_value(row[c]) for c in columns))
    console.print(table)
