"""The layers lean one way (architecture.md): modhifi_core (engine) <- kinds <- tasks <- flows.

The engine never imports orchestration code nor a higher layer: no Prefect, MLflow, DVC,
nor Dask (the orchestration layer hands the engine a `concurrent.futures` executor), no
kinds, tasks or flows. A stage (tasks/, kinds/) never depends on the CLI and flows layer.
kinds/ imports no Prefect, MLflow or DVC: MLflow records and the Dask helper
(tasks/cluster.py, which may import dask) live in tasks/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ORCHESTRATION = {"prefect", "mlflow", "dvc", "dask", "distributed", "prefect_dask"}
FORBIDDEN = {
    "modhifi_core": ORCHESTRATION | {"kinds", "tasks", "flows"},
    "kinds": {"prefect", "mlflow", "dvc", "flows"},
    "tasks": {"flows"},
}


def _imports(path: Path) -> list[str]:
    """Every absolute import in a file, at any nesting level."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_from_a_higher_layer_or_orchestration(layer):
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted((REPO / layer).rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN[layer]
    ]
    assert not offenders


def test_engine_imports_without_orchestration_packages_loaded():
    code = (
        "import sys, pkgutil, importlib, modhifi_core\n"
        "for m in pkgutil.walk_packages(modhifi_core.__path__, 'modhifi_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in ('prefect', 'mlflow', 'dvc', 'dask', 'distributed') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_kind_decisions_live_only_in_the_registry_and_the_adapters():
    """scripts/kind_decisions.sh (the grep issue 22 counts with: kind predicates, source
    prefix tests, record kinds, `kind == "..."`) finds nothing outside kinds/, and at most six
    decisions inside it."""
    found = subprocess.run(
        ["sh", str(REPO / "scripts" / "kind_decisions.sh"), str(REPO)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line for line in found if not line.startswith("kinds/")] == []
    assert len(found) <= 6, found


def test_the_kind_decision_grep_sees_a_prefix_test(tmp_path):
    """The grep above can fail: a stage that asks whether its source is `hf:` is found."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "stage.py").write_text('if source.startswith("hf:"):\n    pass\n')
    found = subprocess.run(
        ["sh", str(REPO / "scripts" / "kind_decisions.sh"), str(tmp_path)], capture_output=True, text=True
    ).stdout
    assert found.startswith("tasks/stage.py:1:")
