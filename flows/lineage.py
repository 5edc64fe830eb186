"""Lineage of an artifact: which stages, code, data and parameters produced it.

The record of truth is `dvc.lock` (written by DVC for every stage it ran): commands,
resolved params, and the md5 of every dependency and output. Each ancestor stage is
joined to its MLflow run (through the `md5/<path>` tags the stage runner sets), which
adds the time, the git commit and the Prefect flow-run id. A checkpoint's own metadata
(parents' sha256, params, metrics) travels with the file, so a copy outside the
workspace still tells what it can. `verify` asks DVC to re-hash every ancestor's deps
and outs on disk, and walks the chain of parent sha256s that the checkpoints record
about themselves (metadata `parents`, roles `model` and `teacher`): every recorded
parent must be a checkpoint present in the workspace (or beside the artifact when there
is no workspace) with exactly that sha256, and so on up to a model with no parent; the
`statistics` and `scores` a pruned model's first round used must be present the same way. The
two checks are independent: DVC's record can be rewritten to match a swapped file, the
sha256 inside the child checkpoint (covered by its own digest) cannot.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from modhifi_core.errors import InputError
from modhifi_core.safe_io import sha256_file


@dataclass
class StageLineage:
    name: str
    cmd: str
    params: dict
    deps: list[dict]
    outs: list[dict]
    run: dict | None = None  # MLflow run id, start time, git commit, Prefect flow-run id
    metrics: dict = field(default_factory=dict)  # the stage's JSON outputs, as on disk
    problems: list[str] = field(default_factory=list)


@dataclass
class Lineage:
    artifact: str
    md5: str
    sha256: str
    workspace: str | None
    produced_by: str | None
    stages: list[StageLineage]
    checkpoint: dict | None
    unverifiable: list[str]
    verified: bool | None = None
    problems: list[str] = field(default_factory=list)
    chain: list[dict] = field(default_factory=list)  # with verify: (file, role, parent, sha256) links

    def to_dict(self) -> dict:
        return asdict(self)


def trace(artifact: Path, workspace: Path | None = None, verify: bool = False) -> Lineage:
    """The lineage of `artifact` (see the module docstring). With `verify`, every hash of
    every ancestor is recomputed and mismatches are listed in `problems`."""
    from tasks.tracking import file_md5

    artifact = Path(artifact).resolve()
    if not artifact.is_file():
        raise InputError(f"artifact not found: {artifact}")
    root = workspace.resolve() if workspace else _find_workspace(artifact)
    md5 = file_md5(artifact)
    result = Lineage(str(artifact), md5, sha256_file(artifact), str(root) if root else None, None, [], None, [])
    result.checkpoint = _checkpoint_summary(artifact)
    if root is None or not (root / "dvc.lock").is_file():
        if verify:
            _verify_chain(result, artifact, root or artifact.parent, [])
        result.unverifiable.append("no dvc.lock found: the stages that produced this file cannot be listed or verified")
        result.verified = False if verify else None
        return result
    lock = yaml.safe_load((root / "dvc.lock").read_text()).get("stages", {})
    producer, recorded = _producer(lock, root, artifact, md5)
    if producer is None:
        if verify:
            _verify_chain(result, artifact, root, _locked_paths(lock, root))
        result.unverifiable.append(f"{artifact.name} (md5 {md5}) is not an output recorded in {root / 'dvc.lock'}")
        result.verified = False if verify else None
        return result
    result.produced_by = producer
    if recorded != md5:
        result.problems.append(f"{artifact} differs from the {producer} output recorded in dvc.lock")
    result.stages = [_stage(name, lock[name], root) for name in _ancestors(lock, producer)]
    if verify:
        _verify(root, result)  # DVC's findings first: they name the changed file itself
        _verify_chain(result, artifact, root, _locked_paths(lock, root))
        result.verified = not result.problems
    return result


def _find_workspace(artifact: Path) -> Path | None:
    for folder in artifact.parents:
        if (folder / "dvc.lock").is_file() or (folder / "dvc.yaml").is_file():
            return folder
    return None


def _producer(lock: dict, root: Path, artifact: Path, md5: str) -> tuple[str | None, str | None]:
    """The stage whose outs include `artifact` (by path inside the workspace, else by md5)."""
    relative = artifact.relative_to(root).as_posix() if artifact.is_relative_to(root) else None
    for name, entry in lock.items():
        for out in entry.get("outs", []):
            if relative is not None and out["path"] == relative:
                return name, out.get("md5")
            if relative is not None and relative.startswith(out["path"].rstrip("/") + "/"):
                return name, md5  # a file inside a folder out: DVC hashes the folder
    for name, entry in lock.items():
        for out in entry.get("outs", []):
            if out.get("md5") == md5:
                return name, md5
    return None, None


def _ancestors(lock: dict, producer: str) -> list[str]:
    """`producer` and every stage upstream of it, upstream first."""
    producers = {out["path"]: name for name, entry in lock.items() for out in entry.get("outs", [])}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in lock[name].get("deps", []):
            for out, up in producers.items():
                if up != name and (dep["path"] == out or dep["path"].startswith(out.rstrip("/") + "/")):
                    visit(up)
        order.append(name)

    visit(producer)
    return order


def _stage(name: str, entry: dict, root: Path) -> StageLineage:
    params = {k: v for values in entry.get("params", {}).values() for k, v in values.items()}
    pick = ("path", "md5", "size", "nfiles")
    deps = [{k: d[k] for k in pick if k in d} for d in entry.get("deps", [])]
    outs = [{k: o[k] for k in pick if k in o} for o in entry.get("outs", [])]
    metrics = {}
    for out in outs:
        path = root / out["path"]
        if path.suffix == ".json" and path.is_file():
            metrics.update(json.loads(path.read_text()))
    return StageLineage(name, entry.get("cmd", ""), params, deps, outs, _mlflow_run(root, name, outs), metrics)


def _mlflow_run(root: Path, stage: str, outs: list[dict]) -> dict | None:
    """The MLflow run of `stage` whose recorded output md5s match dvc.lock (for file outs)
    or the files now on disk (for folder outs); None when there is no such run."""
    if not (root / "mlflow.db").exists():
        return None
    from tasks.tracking import file_md5

    wanted = {}
    for out in outs:
        path = root / out["path"]
        if out.get("md5", "").endswith(".dir") or path.is_dir():
            wanted.update(
                {f"md5/{p.relative_to(root).as_posix()}": file_md5(p) for p in path.rglob("*") if p.is_file()}
            )
        elif "md5" in out:
            wanted[f"md5/{out['path']}"] = out["md5"]
    if not wanted:
        return None
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("modhifi")
    if experiment is None:
        return None
    key, value = next(iter(wanted.items()))
    query = f"tags.stage = '{stage}' and tags.`{key}` = '{value}'"
    for run in client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time DESC"]):
        if all(run.data.tags.get(k) == v for k, v in wanted.items()):
            return {
                "run_id": run.info.run_id,
                "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
                "start_time_utc": _utc(run.info.start_time),
                "git_commit": run.data.tags.get("git_commit"),
                "git_dirty": str(run.data.tags.get("git_commit", "")).endswith("-dirty"),
                "prefect_flow_run_id": run.data.tags.get("prefect_flow_run_id"),
            }
    return None


def _verify(root: Path, result: Lineage) -> None:
    """DVC re-hashes every dep and out of every ancestor stage against dvc.lock."""
    from flows.dvc import dvc

    names = [stage.name for stage in result.stages]
    status = dvc(root, "status", "--json", *names)
    if status.returncode != 0:
        raise InputError(f"dvc status failed in {root}: {status.stderr.strip().splitlines()[-1:]}")
    text = status.stdout.strip()
    report = json.loads(text[text.index("{") :]) if "{" in text else {}
    by_name = {stage.name: stage for stage in result.stages}
    for key, changes in report.items():
        stage = by_name.get(key.split(":")[-1])
        if stage is None:
            continue
        for change in changes:
            if isinstance(change, dict):
                for kind, paths in change.items():
                    items = paths.items() if isinstance(paths, dict) else [(paths, "changed")]
                    for path, what in items:
                        stage.problems.append(f"{kind}: {path} {what}")
            else:
                stage.problems.append(str(change))
    for stage in result.stages:
        result.problems += [f"stage {stage.name}: {p}" for p in stage.problems]
    result.verified = not result.problems


CHAIN_ROLES = ("model", "teacher")  # parents that are checkpoints (`synthetic` is a samples digest)
INPUT_ROLES = ("statistics", "scores")  # parent files that are not checkpoints: checked, not walked


def _locked_paths(lock: dict, root: Path) -> list[Path]:
    """Every .pt file that dvc.lock names as a dep or out (a `model.path` may lie outside)."""
    paths = [entry["path"] for stage in lock.values() for key in ("deps", "outs") for entry in stage.get(key, [])]
    return [(root / p).resolve() for p in paths if str(p).endswith(".pt") and (root / p).is_file()]


def _verify_chain(result: Lineage, artifact: Path, search_root: Path, extra: list[Path]) -> None:
    """Walk the parents recorded inside the checkpoints from `artifact` upwards; a parent
    sha256 that no checkpoint on disk has is a break, added to `result.problems`."""
    if artifact.suffix != ".pt":
        return
    files = [
        p for p in search_root.rglob("*.pt") if not any(s.startswith(".") for s in p.relative_to(search_root).parts)
    ]
    by_sha = {sha256_file(p): p.resolve() for p in sorted({*files, *extra})}
    frontier, seen = [artifact], set()
    while frontier:
        path = frontier.pop(0)
        if path in seen:
            continue
        seen.add(path)
        parents = _recorded_parents(path)
        if parents is None:
            result.problems.append(f"parent chain: {path} is not a readable modhifi checkpoint")
            continue
        for role, sha in sorted(parents.items()):
            if role not in CHAIN_ROLES + INPUT_ROLES:
                continue
            found = by_sha.get(sha)
            if found is None:
                result.problems.append(
                    f"parent chain broken: {path} records its {role} as sha256 {sha}, "
                    f"which no {'checkpoint' if role in CHAIN_ROLES else 'file'} in {search_root} has"
                )
                continue
            result.chain.append({"file": str(path), "role": role, "parent": str(found), "sha256": sha})
            if role in CHAIN_ROLES:
                frontier.append(found)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)  # .dvc/cache, temporary files


def _recorded_parents(path: Path) -> dict[str, str] | None:
    from modhifi_core.checkpoint import load_checkpoint
    from modhifi_core.metadata import read_metadata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(read_metadata(load_checkpoint(path).metadata).parents)
    except InputError:
        return None


def _checkpoint_summary(path: Path) -> dict | None:
    """What the file says about itself, if it is a modhifi checkpoint."""
    if path.suffix != ".pt":
        return None
    from modhifi_core.checkpoint import load_checkpoint
    from modhifi_core.metadata import read_metadata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own warning about unsafe files; the refusal says it
            ckpt = load_checkpoint(path)
    except InputError as exc:
        return {"error": str(exc)}
    meta = read_metadata(ckpt.metadata)
    summary = {
        "stage": meta.operation,
        "code_version": ckpt.metadata.get("code_version"),
        "parents": meta.parents,
        "params": meta.params,
        "data": meta.data,
        "forgotten": meta.forgotten,
        "metrics": meta.metrics,
        "model": {"name": ckpt.config.name, "width": ckpt.config.width, "pruned_layers": len(ckpt.config.layer_shapes)},
    }
    if meta.operation == "prune" and meta.report:
        report = meta.report
        summary["pruning"] = {k: report[k] for k in ("flops_ratio", "params_ratio", "flops_dense", "flops_pruned")}
        summary["pruning"]["layers"] = report.get("layers", {})
    return summary


def _utc(millis: int | None) -> str | None:
    if millis is None:
        return None
    import datetime

    return datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC).isoformat(timespec="seconds")


def to_markdown(lineage: Lineage) -> str:
    """A report a compliance reviewer can read: evidence first, then every stage."""
    status = {True: "verified: every hash matches", False: "VERIFICATION FAILED", None: "not verified (use --verify)"}
    lines = [
        f"# Lineage of `{lineage.artifact}`",
        "",
        f"- md5 `{lineage.md5}`, sha256 `{lineage.sha256}`",
        f"- workspace: {lineage.workspace or 'none found'}; produced by stage: {lineage.produced_by or 'unknown'}",
        f"- {status[lineage.verified]}",
        "",
    ]
    lines += [f"- problem: {p}" for p in lineage.problems]
    lines += [f"- cannot verify: {u}" for u in lineage.unverifiable]
    stages = {stage.name: stage for stage in lineage.stages}
    if "unlearn" in stages:
        lines += _unlearning_evidence(stages["unlearn"].metrics)
    if "prune" in stages:
        lines += _pruning_summary(stages["prune"].metrics)
    if lineage.stages:
        lines += ["", "## Stages (upstream first)", ""]
    for stage in lineage.stages:
        run = stage.run or {}
        lines += [
            f"### {stage.name}",
            "",
            f"- command: `{stage.cmd}`",
            f"- MLflow run: {run.get('run_id', 'not found')}, started {run.get('start_time_utc', '?')}",
            f"- code: git {run.get('git_commit', '?')}; Prefect flow run: {run.get('prefect_flow_run_id', '?')}",
        ]
        if stage.params:
            lines += ["- params: " + ", ".join(f"`{k}`" for k in stage.params)]
            lines += [f"  - `{k}` = `{json.dumps(v, sort_keys=True)}`" for k, v in stage.params.items()]
        lines += [f"- dep `{d['path']}` md5 `{d.get('md5', '?')}`" for d in stage.deps]
        lines += [f"- out `{o['path']}` md5 `{o.get('md5', '?')}`" for o in stage.outs]
        lines += [f"- PROBLEM: {p}" for p in stage.problems]
        lines.append("")
    if lineage.checkpoint:
        meta = lineage.checkpoint
        lines += ["## What the checkpoint says about itself", ""]
        lines += [f"- stage: {meta.get('stage')}; code version: {meta.get('code_version')}"]
        lines += [f"- parent `{k}` sha256 `{v}`" for k, v in (meta.get("parents") or {}).items()]
        lines += [f"- params: `{json.dumps(meta.get('params'), sort_keys=True)}`"]
        lines += [f"- refused: {meta['error']}"] if "error" in meta else []
    if lineage.chain:
        lines += ["", "## Parent chain recorded in the checkpoints (verified on disk)", ""]
        lines += [
            f"- `{link['file']}` {link['role']} = `{link['parent']}` (sha256 `{link['sha256']}`)"
            for link in lineage.chain
        ]
    return "\n".join(lines) + "\n"


def _unlearning_evidence(metrics: dict) -> list[str]:
    if "UA" not in metrics:
        return []
    rows = [
        ("UA: 100 - accuracy on the forgotten class (%)", "UA"),
        ("RA: accuracy on the retained training data (%)", "RA"),
        ("TA: test accuracy without the forgotten class (%)", "TA"),
        ("MIA-Efficacy: forgotten samples judged unseen (%)", "MIA"),
    ]
    lines = [
        "",
        f"## Unlearning evidence: {metrics.get('forget')} removed with {metrics.get('method')}",
        "",
        "| metric | before (source model) | after |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {metrics.get('before_' + k, float('nan')):.2f} | {metrics[k]:.2f} |" for label, k in rows]
    return lines


def _pruning_summary(metrics: dict) -> list[str]:
    if "flops_ratio" not in metrics:
        return []
    return [
        "",
        f"## Pruning: {metrics.get('method')} (calibration: {metrics.get('calibration')})",
        "",
        f"- FLOPs remaining {metrics['flops_ratio']:.3f}, parameters remaining {metrics.get('params_ratio', 0):.3f}",
        f"- CPU latency {metrics.get('latency_dense_ms', 0):.2f} ms -> {metrics.get('latency_pruned_ms', 0):.2f} ms "
        f"(speed-up {metrics.get('latency_speedup', 0):.2f}x, batch {metrics.get('latency_batch')})",
        f"- test accuracy {metrics.get('base_test_accuracy', 0):.2f}% -> {metrics.get('test_accuracy', 0):.2f}%",
        "- per-layer channels: `outputs/pruned/layers.csv`",
    ]
