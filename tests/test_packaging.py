"""`pip install .` installs the engine (`modhifi_core`) with what it imports and nothing of
the pipeline: no Prefect, MLflow, DVC or Dask; the `pipeline` extra brings those."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE = REPO / "modhifi_core"
ORCHESTRATION = {"prefect", "mlflow", "dvc", "dask", "distributed", "prefect-dask"}
# Import names whose distribution is named differently.
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml", "torch_pruning": "torch-pruning"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normalise(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level import name -> the engine files that import it (any nesting level)."""
    found: dict[str, set[str]] = {}
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "modhifi_core":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_core_dependencies_hold_no_orchestration():
    core = _requirement_names(_project()["dependencies"])
    assert not core & ORCHESTRATION
    assert ORCHESTRATION <= _requirement_names(_project()["optional-dependencies"]["pipeline"])


def test_every_engine_import_is_a_core_dependency():
    core = _requirement_names(_project()["dependencies"])
    imports = _third_party_imports()
    assert {"torch", "numpy", "torch_pruning"} <= imports.keys()  # the scan sees the engine
    missing = {
        name: sorted(files) for name, files in imports.items() if _normalise(DISTRIBUTION.get(name, name)) not in core
    }
    assert not missing


def test_the_lock_pins_the_engine_and_the_pipeline():
    """`make install` installs requirements.lock (then modhifi with --no-deps): it must
    satisfy the core dependencies and the pipeline and dev extras, so `make run` and
    `make test` keep installing everything."""
    from packaging.requirements import Requirement

    pinned = dict(line.split("==", 1) for line in (REPO / "requirements.lock").read_text().split() if "==" in line)
    pinned = {_normalise(name): version for name, version in pinned.items()}
    extras = _project()["optional-dependencies"]
    requirements = [Requirement(t) for t in [*_project()["dependencies"], *extras["pipeline"], *extras["dev"]]]
    unmet = [
        str(r)
        for r in requirements
        if _normalise(r.name) not in pinned or not r.specifier.contains(pinned[_normalise(r.name)])
    ]
    assert not unmet


CHECK = """
import importlib, importlib.util, pkgutil, sys
import modhifi_core
assert modhifi_core.__file__.startswith(sys.prefix), modhifi_core.__file__
for m in pkgutil.walk_packages(modhifi_core.__path__, "modhifi_core."):
    importlib.import_module(m.name)
for name in modhifi_core.__all__:
    getattr(modhifi_core, name)
orchestration = ("prefect", "mlflow", "dvc", "dask", "distributed", "prefect_dask")
present = [m for m in orchestration if importlib.util.find_spec(m)]
assert not present, present
print("engine ok")
"""


@pytest.mark.slow
def test_pip_install_of_the_checkout_is_the_engine_alone(tmp_path):
    """A clean venv (no system site-packages), torch 2.13.0 CPU first as the README says,
    then `pip install` of this checkout: every modhifi_core module imports, and none of the
    pipeline's orchestration packages is installed. Several minutes (transformers et al.)."""
    source = tmp_path / "src"  # a copy: pip builds in the source tree (build/, *.egg-info)
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(ENGINE, source / "modhifi_core", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env |= {"HF_HUB_OFFLINE": "1", "PIP_NO_INPUT": "1"}
    for step in (["torch==2.13.0"], [str(source)]):
        subprocess.run([python, "-m", "pip", "install", "-q", *step], check=True, timeout=1200, env=env, cwd=tmp_path)
    run = subprocess.run(
        [python, "-c", CHECK], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "engine ok" in run.stdout
