"""The engine never imports orchestration code (architecture.md): no Prefect, MLflow, DVC,
nor Dask — the orchestration layer hands the engine a `concurrent.futures` executor."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "modhifi_core"
FORBIDDEN = {"prefect", "mlflow", "dvc", "dask", "distributed", "prefect_dask", "flows", "tasks"}


def test_no_orchestration_imports_in_modhifi_core():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
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
