"""The stage DAG, read from dvc.yaml — the only place it is written down.

A stage B depends on stage A when one of B's deps is one of A's outs (or lies inside
an out folder). The Prefect flow, the stage runner and the lineage walk all use this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from modhifi_core.errors import InputError


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots: everything the stage writes
    params: tuple[str, ...]
    upstream: tuple[str, ...] = field(default=())


def read_stages(dvc_yaml: Path) -> dict[str, Stage]:
    """Stages of `dvc_yaml` in file order, each with its upstream stage names."""
    stages = {}
    for name, spec in _raw_stages(dvc_yaml).items():
        try:
            outs = [_path_of(o) for key in ("outs", "metrics", "plots") for o in spec.get(key) or []]
            stages[name] = Stage(
                name=name,
                cmd=spec["cmd"],
                deps=tuple(_path_of(d) for d in spec.get("deps") or []),
                outs=tuple(outs),
                params=tuple(_path_of(p) for p in spec.get("params") or []),
            )
        except (TypeError, AttributeError, StopIteration):
            raise InputError(
                f"{dvc_yaml}: stage {name!r} lists an entry that is neither a path nor a mapping"
            ) from None
    producers = {out: s.name for s in stages.values() for out in s.outs}
    linked = {}
    for stage in stages.values():
        upstream = {producers[o] for d in stage.deps for o in producers if d == o or d.startswith(o.rstrip("/") + "/")}
        upstream.discard(stage.name)
        linked[stage.name] = Stage(**{**stage.__dict__, "upstream": tuple(sorted(upstream))})
    return linked


def _raw_stages(dvc_yaml: Path) -> dict[str, dict]:
    """The `stages` mapping of `dvc_yaml`; any problem raises `InputError` naming the file."""
    if not dvc_yaml.is_file():
        raise InputError(f"no dvc.yaml in {dvc_yaml.parent}")
    try:
        raw = yaml.safe_load(dvc_yaml.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{dvc_yaml}: not valid YAML{where}") from None
    if raw is None:
        raise InputError(f"{dvc_yaml} is empty; it must define `stages:`")
    if not isinstance(raw, dict):
        raise InputError(f"{dvc_yaml}: expected a mapping with `stages:`, got a {type(raw).__name__}")
    stages = raw.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise InputError(f"{dvc_yaml}: `stages:` must be a non-empty mapping of stage name to stage")
    for name, spec in stages.items():
        if not isinstance(spec, dict):
            raise InputError(f"{dvc_yaml}: stage {name!r} must be a mapping (cmd, deps, outs, ...)")
        if not isinstance(spec.get("cmd"), str) or not spec["cmd"].strip():
            raise InputError(f"{dvc_yaml}: stage {name!r} has no 'cmd'")
    return stages


def topological_order(stages: dict[str, Stage]) -> list[str]:
    """Stage names so that every stage comes after its upstream stages (ties: file order)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise InputError(f"dvc.yaml has a cycle through stage {name!r}")
        visiting.add(name)
        for up in stages[name].upstream:
            visit(up)
        visiting.discard(name)
        order.append(name)

    for name in stages:
        visit(name)
    return order


def upstream_closure(stages: dict[str, Stage], names: set[str]) -> set[str]:
    """`names` and every stage they (transitively) depend on."""
    result = set(names)
    frontier = list(names)
    while frontier:
        for up in stages[frontier.pop()].upstream:
            if up not in result:
                result.add(up)
                frontier.append(up)
    return result


def _path_of(entry: str | dict) -> str:
    return entry if isinstance(entry, str) else next(iter(entry))


PROJECT_PACKAGES = ("modhifi_core", "kinds", "tasks", "flows")


def import_closure(root: Path, module: str) -> set[str]:
    """The project source files (paths relative to `root`) that importing `module` can
    execute: the module, every project module it imports anywhere in its body
    (function-level imports included), their packages' `__init__.py`, transitively.
    Static: read from the source with `ast`, nothing is imported."""
    seen: set[str] = set()
    frontier = [module]
    while frontier:
        name = frontier.pop()
        for path in _module_files(root, name):
            if path in seen:
                continue
            seen.add(path)
            frontier.extend(_imports_of(root / path, name, path.endswith("__init__.py")))
    return seen


def _module_files(root: Path, name: str) -> list[str]:
    """The file of module `name` and the `__init__.py` of every package above it."""
    parts = name.split(".")
    files = [f"{'/'.join(parts[:i])}/__init__.py" for i in range(1, len(parts))]
    base = "/".join(parts)
    files.append(f"{base}/__init__.py" if (root / base).is_dir() else f"{base}.py")
    return [f for f in files if (root / f).is_file()]


def _imports_of(path: Path, name: str, is_package: bool) -> list[str]:
    import ast

    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import module`
    return [m for m in found if m.split(".")[0] in PROJECT_PACKAGES]


def check_declared_params(stages: dict[str, Stage], params_file: Path) -> None:
    """InputError (one line) when `params_file` lacks a key some stage declares in
    dvc.yaml (`data.train_per_class`, `model`): DVC would stop that stage with its own
    error. A params.yaml written before a key existed is the usual cause."""
    raw = yaml.safe_load(params_file.read_text()) or {}
    for stage in stages.values():
        for key in stage.params:
            node = raw
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise InputError(
                        f"{params_file.name} has no {key} (stage {stage.name} reads it): add it; "
                        "the repository's params.yaml lists every key with its default"
                    )
                node = node[part]


# The code the installed `modhifi` runs: the folder holding its project packages.
CODE_ROOT = Path(__file__).resolve().parent.parent
# A workspace outside the code (`modhifi init`): each stage's code dependency, one record.
CODE_RECORD = "inputs/code/{stage}.json"


def holds_project_code(root: Path) -> bool:
    """Whether the workspace `root` holds the project's packages itself (the checkout, or
    a copy of it): then a stage's DVC deps are those source files."""
    return all((root / package / "__init__.py").is_file() for package in PROJECT_PACKAGES)


def code_records(kind: object) -> dict[str, dict]:
    """Stage name -> the code dependency of that stage of `kind` in a workspace outside
    the code: `{"modhifi": version, "code_sha256": ...}`, the hash over the files of
    `CODE_ROOT` its module and the kind's adapter can execute (paths and contents), so
    upgrading modhifi re-runs exactly the stages whose code changed."""
    import hashlib

    from modhifi_core import __version__
    from modhifi_core.safe_io import sha256_file

    adapter = import_closure(CODE_ROOT, type(kind).__module__)
    records = {}
    for name in kind.stages:
        files = sorted(import_closure(CODE_ROOT, f"{kind.package}.{name}") | adapter)
        digest = hashlib.sha256("".join(f"{f}\0{sha256_file(CODE_ROOT / f)}\n" for f in files).encode())
        records[name] = {"modhifi": __version__, "code_sha256": digest.hexdigest()}
    return records


def write_code_records(root: Path, kind: object) -> None:
    """Write each stage's `code_records` entry to `root/CODE_RECORD` (rewritten only when it
    changed), before DVC compares its deps."""
    import json

    from modhifi_core.safe_io import atomic_write_json

    for name, record in code_records(kind).items():
        path = root / CODE_RECORD.format(stage=name)
        if not path.is_file() or json.loads(path.read_text()) != record:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, record)


GENERATED = (
    "# Generated by modhifi for a {kind} model: the stages of `{module}` (their StageSpecs) with\n"
    "# code deps = each stage module's import closure. `modhifi run` rewrites this file when the\n"
    "# kind or the code changes: edit the kind's adapter, not this file. dvc.lock is the lineage.\n"
)


def render_dvc_yaml(kind: object, root: Path) -> str:
    """The dvc.yaml of a run of `kind` (a `kinds.ModelKind`) in the workspace `root`: one
    entry per stage of `kind.stages`, `cmd: modhifi stage NAME`; deps = the external-input
    records and artifacts the stage reads, then its code: in a workspace that holds the
    project code (the checkout), the project files its module (`<kind.package>.<stage>`)
    and the kind's adapter can execute (a package folder when all of its files are);
    elsewhere (`modhifi init`), the stage's code record (`code_records`); params, outs,
    metrics and plots as the StageSpec says; the kind's `dvc_plots`."""
    from tasks.inputs import INPUTS
    from tasks.workspace import ARTIFACTS

    paths = {**ARTIFACTS, **INPUTS}
    holds_code = holds_project_code(root)
    adapter = import_closure(root, type(kind).__module__) if holds_code else set()
    stages = {}
    for name, spec in kind.stages.items():
        entry: dict = {"cmd": f"modhifi stage {name}"}
        if holds_code:
            code = _folded(root, import_closure(root, f"{kind.package}.{name}") | adapter)
        else:
            code = [CODE_RECORD.format(stage=name)]
        entry["deps"] = [paths[r] for r in spec.reads] + code
        params = kind.stage_params(name)
        if params:
            entry["params"] = list(params)
        for key, names in (("outs", spec.writes), ("metrics", spec.metrics), ("plots", spec.plots)):
            if names:
                entry[key] = [paths[n] for n in names]
        stages[name] = entry
    document = {"stages": stages}
    if kind.dvc_plots:
        document["plots"] = list(kind.dvc_plots)
    header = GENERATED.format(kind=kind.name, module=type(kind).__module__)
    return header + yaml.safe_dump(document, sort_keys=False, width=120)


def _folded(root: Path, files: set[str]) -> list[str]:
    """`files` sorted, with every package folder all of whose `.py` files are listed
    replaced by the folder (a shorter dvc.yaml that still re-runs on a new file there)."""
    result = set(files)
    for folder in sorted({str(Path(f).parent) for f in files}, key=lambda f: f.count("/")):
        package = root / folder
        if folder == "." or any(str(Path(r)) == folder for r in result):
            continue
        every = {p.relative_to(root).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts}
        if every and every <= result and (package / "__init__.py").is_file() and folder.count("/") >= 1:
            result = {f for f in result if not f.startswith(folder + "/")} | {folder}
    return sorted(result)


def write_dvc_yaml(root: Path, kind: object) -> bool:
    """Write `root/dvc.yaml` for `kind` when its content differs; returns whether it did.
    A dvc.yaml modhifi did not write (no generated header: the user's own, or one from
    before dvc.yaml was generated) is refused in one line, not overwritten, before
    anything is written. In a workspace outside the code the stages' code records
    (`write_code_records`) are refreshed too."""
    from modhifi_core.safe_io import atomic_write_text

    text = render_dvc_yaml(kind, root)
    path = root / "dvc.yaml"
    current = path.read_text() if path.is_file() else None
    if current is not None and current != text and not current.startswith(GENERATED.splitlines()[0][:24]):
        raise InputError(
            f"{path} was not written by modhifi: `modhifi run` writes the dvc.yaml of the model's kind "
            "there; move that file away and run again"
        )
    if not holds_project_code(root):
        write_code_records(root, kind)  # refreshed on every run, like the inputs' records
    if current == text:
        return False
    atomic_write_text(path, text)
    return True


def prepare_workspace(ws: object) -> dict[str, Stage]:
    """The stages of this workspace's run: its params validated, the dvc.yaml of the
    model's kind written (`tasks.dag.write_dvc_yaml`; unchanged when it is current) and
    read, every params key a stage declares present in params.yaml."""
    from kinds import kind_of

    params = ws.params()
    write_dvc_yaml(ws.root, kind_of(params.model.source, ws.root))
    stages = read_stages(ws.root / "dvc.yaml")
    check_declared_params(stages, ws.params_file)
    return stages
