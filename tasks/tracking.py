"""MLflow tracking of stages: one run per stage, nested under the pipeline's parent run.

A stage process does not talk to MLflow itself when `modhifi run` drives it: it writes a
*tracking record* (`StageRecord`: params, metrics, the md5 of every output, the
checkpoint to register, the folders to log, start and end times) to
`.modhifi/tracking/<stage>.json`, and the flow process — which has MLflow imported and
holds the parent run — replays it (`replay`). Importing MLflow and opening its store cost
several seconds per process; nine stage processes paid it nine times. A stage run alone
(`dvc repro`, `modhifi stage`) replays its own record at once, so it is tracked the same
way. Runs are made through `MlflowClient` with explicit ids and times (no thread-local
active run).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modhifi_core.checkpoint import code_version
from modhifi_core.safe_io import atomic_write_json, sha256_file
from tasks.workspace import Workspace

EXPERIMENT = "modhifi"
# Artifacts registered as model versions when a stage writes them.
REGISTERED = {"pruned_model": "modhifi-pruned", "unlearned_model": "modhifi-unlearned"}
# Folders logged as MLflow artifacts when a stage writes them (an open-weight model's pruned
# or unlearned Hugging Face folder, with its modhifi.json lineage; empty for a zoo model).
LOGGED_FOLDERS = ("report", "pruned_hf", "unlearned_hf")
DEFER = "MODHIFI_DEFER_TRACKING"  # set by `modhifi run`: the flow replays the records


@dataclass
class StageRecord:
    """What one stage run tells MLflow. Times in milliseconds since the epoch."""

    stage: str
    params: dict
    metrics: dict
    tags: dict[str, str]
    start_ms: int
    end_ms: int
    register: dict[str, str] = field(default_factory=dict)  # artifact name -> parent sha256
    folders: list[str] = field(default_factory=list)  # paths relative to the workspace


def record_stage(
    ws: Workspace, stage: str, params: dict, metrics: dict, outs: tuple[str, ...], times: tuple
) -> StageRecord:
    """The record of a finished stage: its outputs' md5 tags (`md5/<path>`, how the lineage
    walk finds the run that produced a file in dvc.lock), and the checkpoints and folders
    among its outputs that MLflow registers or stores."""
    tags = {**base_tags(stage), **output_tags(ws, outs)}
    names = {ws.artifact(name).relative_to(ws.root).as_posix(): name for name in (*REGISTERED, *LOGGED_FOLDERS)}
    checkpoints = [names[o] for o in outs if names.get(o) in REGISTERED]
    payloads = {name: _payload(ws, name) for name in checkpoints}
    # A language-model run's model.pt files are records (of a folder, or of a skipped stage), not checkpoints.
    register = {name: _parent_sha256(p) for name, p in payloads.items() if "record" not in p}
    folders = [o for o in outs if names.get(o) in LOGGED_FOLDERS]
    return StageRecord(stage, flatten(params), _numeric(metrics), tags, times[0], times[1], register, folders)


def track(ws: Workspace, record: StageRecord) -> None:
    """Write the record for the flow to replay (under `modhifi run`), else replay it now."""
    if os.environ.get(DEFER):
        atomic_write_json(record_path(ws, record.stage), asdict(record))
    else:
        replay(ws, record, os.environ.get("MODHIFI_PARENT_RUN_ID"))


def record_path(ws: Workspace, stage: str) -> Path:
    return ws.root / ".modhifi" / "tracking" / f"{stage}.json"


def replay_pending(ws: Workspace, stage: str, parent_run_id: str | None) -> bool:
    """Replay and delete the record a deferred stage process left; False when there is none."""
    path = record_path(ws, stage)
    if not path.is_file():
        return False
    replay(ws, StageRecord(**json.loads(path.read_text())), parent_run_id)
    path.unlink()
    return True


def replay(ws: Workspace, record: StageRecord, parent_run_id: str | None) -> str:
    """Create the stage's MLflow run (nested under `parent_run_id` when given) from `record`;
    returns its run id."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.tracking.MlflowClient(tracking_uri=ws.mlflow_uri)
    tags = dict(record.tags)
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(configure(ws), start_time=record.start_ms, tags=tags, run_name=record.stage)
    run_id = run.info.run_id
    params = [Param(k, str(v)[:6000]) for k, v in record.params.items()]
    metrics = [Metric(k, v, record.end_ms, 0) for k, v in record.metrics.items()]
    tag_list = [RunTag(k, v) for k, v in record.tags.items()]
    for i in range(0, max(len(params), len(metrics), len(tag_list)), 100):  # MLflow's batch limits
        client.log_batch(run_id, metrics=metrics[i : i + 100], params=params[i : i + 100], tags=tag_list[i : i + 100])
    for artifact, parent in record.register.items():
        _register_model(ws, client, run, artifact, parent, record.tags)
    for folder in record.folders:
        client.log_artifacts(run_id, str(ws.root / folder), artifact_path=Path(folder).name)
    client.set_terminated(run_id, status="FINISHED", end_time=record.end_ms)
    return run_id


def close_interrupted_runs(ws: Workspace) -> int:
    """Mark FAILED (tag `modhifi.interrupted`) every MLflow run of the workspace still
    RUNNING; returns how many. Stage records a killed flow left unreplayed are logged now,
    without a parent run. Call it only under the workspace lock: no run of this workspace
    is live then, so a RUNNING one belongs to a `modhifi run` that was killed."""
    import mlflow

    for stale in sorted((ws.root / ".modhifi" / "tracking").glob("*.json")):
        replay_pending(ws, stale.stem, None)
    if not (ws.root / "mlflow.db").is_file():
        return 0

    experiment_id = configure(ws)
    client = mlflow.tracking.MlflowClient(tracking_uri=ws.mlflow_uri)
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    for run in runs:
        client.set_tag(run.info.run_id, "modhifi.interrupted", "true")
        client.set_terminated(run.info.run_id, status="FAILED")
    return len(runs)


# The parent runs this workspace's store holds (id, name), kept beside it: the record that
# says which runs' records went with a deleted `mlflow.db`.
RUN_LEDGER = Path(".modhifi") / "mlflow-runs.json"


def remember_run(ws: Workspace, run_id: str, name: str) -> None:
    """Add a parent run to the workspace's ledger of runs its MLflow store holds."""
    atomic_write_json(ws.root / RUN_LEDGER, [*_ledger(ws), {"run_id": run_id, "name": name}])


def recreate_lost_store(ws: Workspace) -> str | None:
    """When `mlflow.db` is gone but the ledger lists runs it held: make a new store (with
    the experiment), empty the ledger and return one line naming the runs whose records
    are gone; None when nothing was lost."""
    runs = _ledger(ws)
    if (ws.root / "mlflow.db").is_file() or not runs:
        return None
    configure(ws)
    atomic_write_json(ws.root / RUN_LEDGER, [])
    names = ", ".join(f"{r.get('name')} ({r.get('run_id')})" for r in runs[:3])
    more = f" and {len(runs) - 3} more" if len(runs) > 3 else ""
    return (
        f"{ws.root / 'mlflow.db'} was deleted: a new MLflow store is made; the records of "
        f"{len(runs)} earlier run(s) are gone: {names}{more} (their outputs and dvc.lock are not)"
    )


def _ledger(ws: Workspace) -> list[dict]:
    try:
        runs = json.loads((ws.root / RUN_LEDGER).read_text())
    except (OSError, ValueError):
        return []
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def configure(ws: Workspace) -> str:
    """Point MLflow at the workspace's SQLite store; returns the experiment id."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(ws.mlflow_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(EXPERIMENT, artifact_location=ws.mlflow_artifacts.as_uri())


def base_tags(stage: str | None = None) -> dict[str, str]:
    tags = {"git_commit": code_version(), "prefect_flow_run_id": os.environ.get("MODHIFI_FLOW_RUN_ID", "none")}
    if stage:
        tags["stage"] = stage
    return tags


def _register_model(
    ws: Workspace, client: object, run: object, artifact: str, parent_sha256: str | None, run_tags: dict[str, str]
) -> None:
    """Log a checkpoint file and register it as a new version of its model name. The
    version points at the checkpoint file itself (loaded later with weights_only=True),
    not at a pickled MLflow model. `run_tags`: the stage process's tags (code version,
    Prefect flow run), which the version carries too."""
    from mlflow.exceptions import MlflowException

    path = ws.artifact(artifact)
    client.log_artifact(run.info.run_id, str(path), artifact_path="checkpoint")
    name = REGISTERED[artifact]
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    tags = {
        "git_commit": run_tags["git_commit"],
        "prefect_flow_run_id": run_tags["prefect_flow_run_id"],
        "dvc_md5": file_md5(path),
        "sha256": sha256_file(path),
        "parent_model_sha256": parent_sha256 or "none",
        "artifact": str(path.relative_to(ws.root)),
    }
    source = f"{run.info.artifact_uri}/checkpoint/{path.name}"
    client.create_model_version(name, source=source, run_id=run.info.run_id, tags=tags)
    client.set_tag(run.info.run_id, f"registered_{name}", "true")
    client.set_tag(run.info.run_id, "dvc_md5", tags["dvc_md5"])


def _payload(ws: Workspace, artifact: str) -> dict:
    """A checkpoint's saved dict (read with weights_only=True, without rebuilding the model)."""
    import torch

    return torch.load(ws.artifact(artifact), map_location="cpu", weights_only=True)


def _parent_sha256(payload: dict) -> str | None:
    """The `model` parent a checkpoint records."""
    return (payload.get("metadata") or {}).get("parents", {}).get("model")


def output_tags(ws: Workspace, outs: tuple[str, ...]) -> dict[str, str]:
    """`md5/<path>` -> md5 of every file the stage wrote."""
    tags = {}
    for out in outs:
        path = ws.root / out
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.exists():
                tags[f"md5/{file.relative_to(ws.root).as_posix()}"] = file_md5(file)
    return tags


def file_md5(path: Path) -> str:
    """The md5 DVC 3 records for a file out (plain content md5)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def flatten(obj: dict, prefix: str = "") -> dict:
    """Nested dict -> {'a.b': value}; lists become JSON strings (MLflow params are scalars)."""
    flat = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)[:500]
        else:
            flat[name] = value
    return flat


def _numeric(metrics: dict) -> dict[str, float]:
    """The finite numbers of `metrics` (flattened), what MLflow takes as metrics."""
    flat = flatten(metrics)
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
