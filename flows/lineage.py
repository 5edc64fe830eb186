"""Lineage of an artifact: which stages, code, data and parameters produced it.

The record of truth is `dvc.lock` (written by DVC for every stage it ran): commands,
resolved params, and the md5 of every dependency and output. Each ancestor stage is
joined to its MLflow run (through the `md5/<path>` tags the stage runner sets), which
adds the time, the git commit and the Prefect flow-run id. An artifact's own record
travels with it, so a copy outside the workspace still tells what it can: a checkpoint's
metadata (parents' sha256, params, metrics), a Hugging Face folder's `modhifi.json`
(parents' sha256, params, code version, its weights' sha256; the folder or any file in
it is traced through it), a language-model stage's record (train_base: the source
model's path and files' sha256; prune: the folder it wrote).

`verify` asks DVC to re-hash every ancestor's deps and outs on disk, and walks the chain
the artifacts record about themselves: every recorded parent (roles `model`, `teacher`,
`base_model`) must be a file present in the workspace (or beside the artifact when there
is no workspace) with exactly that sha256, and so on up to a model with no parent; the
inputs a pruned model used (`statistics`, `scores`, `calibration`) must be present the
same way; every file an artifact names by path (a folder's weights, the source model's
GGUF or safetensors outside the workspace, which DVC does not re-hash) must still hash
as recorded. The two checks are independent: DVC's record can be rewritten to match a
swapped file, the sha256 inside the child artifact cannot be without breaking the chain.
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
    md5: str  # md5 and sha256 of the file; of its modhifi.json for a Hugging Face folder
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
    identity = _identity_file(artifact)
    root = workspace.resolve() if workspace else _find_workspace(artifact)
    md5 = file_md5(identity)
    result = Lineage(str(artifact), md5, sha256_file(identity), str(root) if root else None, None, [], None, [])
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
    if artifact.is_file() and recorded != md5:  # a folder: DVC's folder hash, checked by --verify
        result.problems.append(f"{artifact} differs from the {producer} output recorded in dvc.lock")
    result.stages = [_stage(name, lock[name], root) for name in _ancestors(lock, producer)]
    if verify:
        _verify(root, result)  # DVC's findings first: they name the changed file itself
        _verify_chain(result, artifact, root, _locked_paths(lock, root))
        result.verified = not result.problems
    return result


def _identity_file(artifact: Path) -> Path:
    """The file whose hashes identify `artifact`: itself, or a Hugging Face folder's
    modhifi.json (which records the sha256 of each of its weight files)."""
    from modhifi_core.sources.huggingface import LINEAGE_FILE

    if artifact.is_file():
        return artifact
    if artifact.is_dir() and (artifact / LINEAGE_FILE).is_file():
        _folder_lineage(artifact)  # a malformed or outsized record: one line, before it is hashed
        return artifact / LINEAGE_FILE
    if artifact.is_dir():
        raise InputError(f"{artifact} is a folder without {LINEAGE_FILE}: give a file, or a folder modhifi wrote")
    raise InputError(f"artifact not found: {artifact}")


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


# Parents walked further up (`synthetic` is a samples digest).
CHAIN_ROLES = ("model", "teacher", "base_model", "pruned_model")
INPUT_ROLES = ("statistics", "scores", "calibration")  # parent files that are not models: checked, not walked


@dataclass
class _Recorded:
    """What one artifact records about its origin: `parents` role -> sha256 (looked up
    among the workspace's files), `files` it names by path as (role, path, sha256) (a
    Hugging Face folder's weights, a source model's files), `folders` it names (walked),
    `named` parents recorded as files by name (role, name, sha256)."""

    parents: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, Path, str]] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    named: list[tuple[str, str, str]] = field(default_factory=list)  # (role, file name, sha256) parents


def _locked_paths(lock: dict, root: Path) -> list[Path]:
    """Every .pt file that dvc.lock names as a dep or out (a `model.path` may lie outside)."""
    paths = [entry["path"] for stage in lock.values() for key in ("deps", "outs") for entry in stage.get(key, [])]
    return [(root / p).resolve() for p in paths if str(p).endswith(".pt") and (root / p).is_file()]


def _verify_chain(result: Lineage, artifact: Path, search_root: Path, extra: list[Path]) -> None:
    """Walk the parents recorded inside the artifacts from `artifact` upwards (checkpoints,
    the language-model stages' records, Hugging Face folders' modhifi.json); a parent
    sha256 that no file on disk has, or a named file that no longer hashes as recorded,
    is a break, added to `result.problems`."""
    start = _self_described(artifact)
    if start is None:
        return
    # a folder named *.pt is no checkpoint; hidden folders hold DVC's cache and temporary files
    files = [p for p in search_root.rglob("*.pt") if p.is_file() and not _hidden(p.relative_to(search_root))]
    by_sha = {sha256_file(p): p.resolve() for p in sorted({*files, *extra})}
    frontier, seen, named = [start], set(), []
    while frontier:
        path = frontier.pop(0)
        if path in seen:
            continue
        seen.add(path)
        recorded = _recorded(path, search_root)
        if recorded is None:
            result.problems.append(f"parent chain: {path} is not a readable modhifi checkpoint or pipeline record")
            continue
        result.problems += recorded.problems
        frontier += _link_parents(result, path, recorded.parents, by_sha, search_root)
        _check_files(result, path, recorded.files)
        for folder in recorded.folders:
            result.chain.append({"file": str(path), "role": "folder", "parent": str(folder), "sha256": None})
            frontier.append(folder)
        named += [(path, *entry) for entry in recorded.named]
        if not frontier:  # files recorded by name: among those the chain checked, else by name under the root
            frontier += _link_named(result, named, search_root)
            named = []


def _link_parents(
    result: Lineage, path: Path, parents: dict[str, str], by_sha: dict[str, Path], search_root: Path
) -> list[Path]:
    """Chain links for `parents` found by sha256; returns the ones to walk further up."""
    walk = []
    for role, sha in sorted(parents.items()):
        if role not in CHAIN_ROLES + INPUT_ROLES:
            result.unverifiable.append(f"cannot verify {path}'s parent {role} (sha256 {sha}): not a file modhifi finds")
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
            walk.append(found)
    return walk


def _link_named(result: Lineage, named: list[tuple[Path, str, str, str]], search_root: Path) -> list[Path]:
    """Chain links for parents recorded as (artifact, role, file name, sha256) (a command's
    Hugging Face source: its weight files by name): the file the chain already checked with
    that sha256, else a file of that name under `search_root` that has it; the folder
    holding it is walked further when modhifi wrote it. None found: "cannot verify"."""
    from modhifi_core.sources.huggingface import LINEAGE_FILE

    checked = {link["sha256"]: Path(link["parent"]) for link in result.chain if link["sha256"]}
    walk = []
    for path, role, name, sha in named:
        found = checked.get(sha)
        if found is None:
            candidates = (p for p in search_root.rglob(name) if p.is_file() and not _hidden(p.relative_to(search_root)))
            found = next((p.resolve() for p in candidates if p.parent != path and sha256_file(p) == sha), None)
        if found is None:
            result.unverifiable.append(
                f"cannot verify {path}'s {role} {name} (sha256 {sha}): no file of that name under {search_root} has it"
            )
            continue
        result.chain.append({"file": str(path), "role": f"{role} {name}", "parent": str(found), "sha256": sha})
        if (found.parent / LINEAGE_FILE).is_file():
            walk.append(found.parent)
    return walk


def _check_files(result: Lineage, path: Path, files: list[tuple[str, Path, str]]) -> None:
    """Chain links for the files `path` names, each re-hashed on disk."""
    for role, file, sha in files:
        actual = sha256_file(file) if file.is_file() else None
        if actual != sha:
            now = "which is missing" if actual is None else f"which now hashes {actual}"
            result.problems.append(f"parent chain broken: {path} records its {role} {file} as sha256 {sha}, {now}")
            continue
        result.chain.append({"file": str(path), "role": role, "parent": str(file), "sha256": sha})


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)  # .dvc/cache, temporary files


def _self_described(artifact: Path) -> Path | None:
    """The file or folder that records `artifact`'s origin: a Hugging Face folder with
    modhifi.json for the folder or any file in it, the file itself for a .pt, else None."""
    from modhifi_core.sources.huggingface import LINEAGE_FILE

    for folder in (artifact, artifact.parent):
        if folder.is_dir() and (folder / LINEAGE_FILE).is_file():
            return folder
    return artifact if artifact.suffix == ".pt" else None


def _recorded(path: Path, root: Path) -> _Recorded | None:
    """What `path` records about its origin (None: not a readable modhifi artifact)."""
    if path.is_dir():
        return _recorded_by_folder(path)
    ckpt = _checkpoint(path)
    if isinstance(ckpt, str):
        record = _pipeline_record(path)
        return None if record is None else _recorded_by_record(record, root)
    from modhifi_core.metadata import read_metadata

    parents, named = _split_parents(dict(read_metadata(ckpt.metadata).parents))
    return _Recorded(parents=parents, named=named)


def recorded_parents(path: Path) -> list[tuple[str, str | None, str]]:
    """The parents `path` (a checkpoint, a folder with modhifi.json, a stage record)
    records, as (role, file name or None, sha256); none when it records none or is not a
    readable modhifi artifact (the command that reads it says why)."""
    try:
        recorded = _recorded(path, path.parent)
    except (InputError, OSError, ValueError, KeyError, TypeError):
        return []
    if recorded is None:
        return []
    return [(role, None, sha) for role, sha in recorded.parents.items()] + list(recorded.named)


def _recorded_by_folder(folder: Path) -> _Recorded:
    """A Hugging Face folder: its parents' sha256 and its weights' sha256 (modhifi.json);
    a weight file it does not list is a problem."""
    record = _folder_lineage(folder)
    parents, named = _split_parents(record.get("parents") or {})
    weights = record.get("weights") or {}
    files = [("weight", folder / name, sha) for name, sha in sorted(weights.items())]
    unlisted = sorted(p.name for p in folder.glob("*.safetensors") if p.name not in weights)
    problems = [f"parent chain: {folder / name} is not among the weights modhifi.json records" for name in unlisted]
    return _Recorded(parents=parents, files=files, problems=problems, named=named)


def _split_parents(recorded: dict) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Recorded parents as role -> sha256, and those recorded as files by name (role ->
    {file name: sha256}, e.g. a command's Hugging Face source) as (role, name, sha256)."""
    parents = {role: sha for role, sha in recorded.items() if isinstance(sha, str)}
    named = [(role, name, sha) for role, files in sorted(recorded.items()) if isinstance(files, dict)
             for name, sha in sorted(files.items())]  # fmt: skip
    return parents, named


def _recorded_by_record(record: dict, root: Path) -> _Recorded:
    """An open-weight model's stage record (`tasks.records`): the source model's files
    (train_base), the folder a prune or unlearn stage wrote, nothing for anything else."""
    from tasks.records import FOLDER, SOURCE, source_file

    shape = record.get("record")
    if shape == SOURCE:
        files = [(f"source file {name}", source_file(record, name), sha) for name, sha in record["files"].items()]
        return _Recorded(files=sorted(files))
    if shape == FOLDER:
        parents, named = _split_parents((record.get("metadata") or {}).get("parents") or {})
        return _Recorded(parents=parents, named=named, folders=[(root / record["folder"]).resolve()])
    return _Recorded()


def _checkpoint(path: Path) -> object | str:
    """The modhifi checkpoint at `path`, or the reason it is not one."""
    from modhifi_core.checkpoint import load_checkpoint

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own warning about unsafe files; the refusal says it
            return load_checkpoint(path)
    except InputError as exc:
        return str(exc)


def _pipeline_record(path: Path) -> dict | None:
    """A stage's record (a plain dict naming its `record` shape, read with weights_only), or None."""
    from tasks.records import read_record

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = read_record(path)
    except Exception:  # noqa: BLE001 - unsafe or not a torch file: not a record
        return None
    return record if isinstance(record, dict) and isinstance(record.get("record"), str) else None


# modhifi writes a lineage file of a few kB (params, metrics, hashes, an unlearning log);
# anything far larger is no lineage record, and parsing it would take minutes.
MAX_LINEAGE_BYTES = 16 * 2**20


def _folder_lineage(folder: Path) -> dict:
    """A Hugging Face folder's modhifi.json, checked: `InputError` naming the file (and the
    key) when it is larger than `MAX_LINEAGE_BYTES`, not a JSON object, its `parents` not an
    object of sha256 strings (or of file name -> sha256), or its `weights` not an object of
    file names in the folder -> sha256."""
    from modhifi_core.sources.huggingface import LINEAGE_FILE

    path = folder / LINEAGE_FILE
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    if path.stat().st_size > MAX_LINEAGE_BYTES:
        size = path.stat().st_size / 2**20
        raise InputError(f"{path} is {size:.0f} MiB, more than a lineage record holds ({MAX_LINEAGE_BYTES >> 20} MiB)")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path} is not a JSON object")
    for key in ("parents", "weights"):
        if not isinstance(record.get(key) or {}, dict):
            raise InputError(f"{path}: key {key!r} must be an object, not a {type(record[key]).__name__}")
    for role, sha in (record.get("parents") or {}).items():
        files = sha if isinstance(sha, dict) else {"": sha}
        if not all(isinstance(v, str) for v in files.values()) or not all(_plain_name(n) for n in files if n):
            raise InputError(f"{path}: key 'parents' entry {role!r} must be a sha256 or file name -> sha256")
    for name, sha in (record.get("weights") or {}).items():
        if not _plain_name(name) or not isinstance(sha, str):
            raise InputError(f"{path}: key 'weights' entry {name!r} must be a file name in the folder -> sha256")
    return record


def _plain_name(name: str) -> bool:
    """A file name with no folder part (`../../file`, `/etc/x`, `a/b` are not)."""
    return bool(name) and name not in (".", "..") and Path(name).name == name and "\\" not in name


def _checkpoint_summary(path: Path) -> dict | None:
    """What the artifact says about itself: a modhifi checkpoint's metadata, a Hugging
    Face folder's modhifi.json (for the folder or a file in it), a pipeline record."""
    described = _self_described(path)
    if described is None:
        return None
    if described.is_dir():
        return _folder_summary(described)
    ckpt = _checkpoint(described)
    if isinstance(ckpt, str):
        record = _pipeline_record(described)
        return {"error": ckpt} if record is None else _record_summary(record)
    from modhifi_core.metadata import read_metadata

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


def _folder_summary(folder: Path) -> dict:
    """A Hugging Face folder's modhifi.json (operation, code version, parents, params,
    metrics, weights' sha256) and the shape its config.json states."""
    record = _folder_lineage(folder)
    keys = ("parents", "params", "metrics", "weights")
    summary = {"stage": record.get("operation"), "code_version": record.get("code_version")}
    summary |= {key: record.get(key) for key in keys}
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    shape = ("model_type", "architectures", "num_hidden_layers", "hidden_size", "intermediate_size")
    summary["model"] = {key: config.get(key) for key in shape}
    return summary


def _record_summary(record: dict) -> dict:
    """A pipeline record's fields, without its tensors (token ids, statistics, scores)."""
    summary = {}
    for key, value in record.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        summary[key] = value
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
    if "train_base" in stages:
        lines += _source_summary(stages["train_base"].metrics)
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
        lines += ["## What the artifact says about itself", "", *_self_description(lineage.checkpoint)]
    if lineage.chain:
        lines += ["", "## Parent chain recorded in the artifacts (verified on disk)", ""]
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
    return lines + _forgetting_audit(metrics)


def _forgetting_audit(metrics: dict) -> list[str]:
    """Where the unlearned model's forgetting lives (`durability.audit_forgetting`), and
    whether the method was asked for a logit mask; none for a record without the audit."""
    lines = []
    if metrics.get("forgetting_is_logit_mask"):
        lines += ["", "**The forgetting is a logit mask**: the method edited the forget class's classifier row only."]
    if "forgetting_lives_in" in metrics:
        from modhifi_core.durability import verdict_sentence

        lines += ["", f"Where the forgetting lives (audit of the unlearned model): {verdict_sentence(metrics)}"]
    return lines


def _self_description(meta: dict) -> list[str]:
    """Markdown lines of `_checkpoint_summary`'s record (a checkpoint, a Hugging Face
    folder's modhifi.json, a pipeline record)."""
    if "error" in meta:
        return [f"- refused: {meta['error']}"]
    if "record" in meta:
        lines = [f"- pipeline record `{meta['record']}`"]
        if "path" in meta:
            lines += [f"- source model `{meta['path']}` ({meta.get('kind')}, {meta.get('weights_format')})"]
        lines += [f"- source file `{name}` sha256 `{sha}`" for name, sha in (meta.get("files") or {}).items()]
        lines += [f"- Hugging Face folder `{meta['folder']}`"] if "folder" in meta else []
        lines += [f"- skipped: {meta['reason']}"] if "reason" in meta else []
        return lines
    lines = [f"- stage: {meta.get('stage')}; code version: {meta.get('code_version')}"]
    for role, value in (meta.get("parents") or {}).items():
        files = value if isinstance(value, dict) else {"": value}
        lines += [f"- parent `{role}`{f' `{name}`' if name else ''} sha256 `{sha}`" for name, sha in files.items()]
    lines += [f"- weight `{name}` sha256 `{sha}`" for name, sha in (meta.get("weights") or {}).items()]
    lines += [f"- params: `{json.dumps(meta.get('params'), sort_keys=True)}`"]
    return lines


def _source_summary(metrics: dict) -> list[str]:
    """The open-weight model a language-model run started from (train_base's metrics):
    its folder, kind, format and each file's sha256."""
    if "files" not in metrics:
        return []
    source = f"`{metrics.get('path')}` ({metrics.get('kind')}, {metrics.get('weights_format')})"
    files = [f"- `{name}` sha256 `{sha}`" for name, sha in metrics["files"].items()]
    return ["", f"## Source model: {source}", "", *files]


def _pruning_summary(metrics: dict) -> list[str]:
    """The prune stage's ratios and latency; a classifier's accuracy (a language model's
    held-out metrics are the evaluate stage's, downstream of a pruned model)."""
    if "flops_ratio" not in metrics:
        return []
    batch = metrics.get("latency_batch")
    shape = f"batch {batch}" if batch is not None else f"{metrics.get('latency_tokens')} tokens"
    lines = [
        "",
        f"## Pruning: {metrics.get('method')} (calibration: {metrics.get('calibration')})",
        "",
        f"- FLOPs remaining {metrics['flops_ratio']:.3f}, parameters remaining {metrics.get('params_ratio', 0):.3f}",
        f"- CPU latency {metrics.get('latency_dense_ms', 0):.2f} ms -> {metrics.get('latency_pruned_ms', 0):.2f} ms "
        f"(speed-up {metrics.get('latency_speedup', 0):.2f}x, {shape})",
    ]
    if "test_accuracy" in metrics:
        lines += [f"- test accuracy {metrics.get('dense_test_accuracy', 0):.2f}% -> {metrics['test_accuracy']:.2f}%"]
    return [*lines, "- per-layer channels: `outputs/pruned/layers.csv`"]
