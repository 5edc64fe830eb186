"""MLflow tracking of stages: one nested run per stage under the pipeline's parent run.

The parent run id and the Prefect flow-run id reach a stage process through the
environment (MODHIFI_PARENT_RUN_ID, MODHIFI_FLOW_RUN_ID), because stages run as
`dvc repro` subprocesses. A stage run alone (`dvc repro`, `modhifi stage`) gets a
top-level run. Active runs are thread-local in MLflow, so parents are passed explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from modhifi_core.checkpoint import code_version
from modhifi_core.safe_io import sha256_file
from tasks.workspace import Workspace

EXPERIMENT = "modhifi"
REGISTERED = {"pruned_model": "modhifi-pruned", "unlearned_model": "modhifi-unlearned"}


def configure(ws: Workspace) -> str:
    """Point MLflow at the workspace's SQLite store; returns the experiment id."""
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


@contextmanager
def stage_run(ws: Workspace, stage: str, params: dict) -> Iterator[mlflow.ActiveRun]:
    """A run for one stage, nested under the pipeline run when there is one."""
    experiment_id = configure(ws)
    parent = os.environ.get("MODHIFI_PARENT_RUN_ID")
    kwargs = {"parent_run_id": parent, "nested": True} if parent else {}
    with mlflow.start_run(run_name=stage, experiment_id=experiment_id, tags=base_tags(stage), **kwargs) as run:
        mlflow.log_params(flatten(params))
        yield run


def log_metrics(metrics: dict) -> None:
    numeric = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and v == v}
    if numeric:
        mlflow.log_metrics(numeric)


def log_artifacts(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=path.name)
        elif path.exists():
            mlflow.log_artifact(str(path))


def register_model(ws: Workspace, artifact: str, run: mlflow.ActiveRun, parent_sha256: str | None) -> None:
    """Log a checkpoint file and register it as a new version of its model name.

    The registered version points at the checkpoint file itself (loaded later with
    weights_only=True), not at a pickled MLflow model.
    """
    path = ws.artifact(artifact)
    mlflow.log_artifact(str(path), artifact_path="checkpoint")
    name = REGISTERED[artifact]
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    tags = {
        **base_tags(),
        "dvc_md5": file_md5(path),
        "sha256": sha256_file(path),
        "parent_model_sha256": parent_sha256 or "none",
        "artifact": str(path.relative_to(ws.root)),
    }
    source = f"{run.info.artifact_uri}/checkpoint/{path.name}"
    client.create_model_version(name, source=source, run_id=run.info.run_id, tags=tags)
    mlflow.set_tags({f"registered_{name}": "true", "dvc_md5": tags["dvc_md5"]})


def tag_outputs(ws: Workspace, outs: tuple[str, ...]) -> None:
    """Tag the active run with the md5 of every file the stage wrote (`md5/<path>`), so
    the lineage walk finds the run that produced a file recorded in dvc.lock."""
    tags = {}
    for out in outs:
        path = ws.root / out
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.exists():
                tags[f"md5/{file.relative_to(ws.root).as_posix()}"] = file_md5(file)
    mlflow.set_tags(tags)


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
