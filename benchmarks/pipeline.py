"""Overhead of a no-op re-run of the whole pipeline, and where the time goes.

Builds a tiny workspace, runs the pipeline once, then times (median of --repeats):

* the whole no-op `modhifi run` (every stage skipped), in a fresh process;
* its parts, each in a fresh process: interpreter start, importing the CLI with
  Prefect and MLflow, `dvc status`, an empty Prefect flow on the ephemeral server
  (minus the import), and opening the MLflow SQLite store (minus the import).

Goal (issue 6): the no-op re-run takes at most 15 s. Writes
benchmarks/results/pipeline_overhead.json.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, parse, parser, print_table, result_path, write_result

sys.path.insert(0, str(REPO / "tests"))

from pipeline_workspace import isolated_env, make_workspace, run_pipeline  # noqa: E402


def timed(command: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command}: {result.stderr[-500:]}")
    return time.perf_counter() - start


def main() -> None:
    options = parser(__doc__, "result file (default results/pipeline_overhead.json)", threads=False)
    options.add_argument("--repeats", type=int, default=3)
    args = parse(options)
    home = Path(tempfile.mkdtemp(prefix="modhifi-bench-"))
    root = make_workspace(home / "ws")
    env = isolated_env(home)
    first = time.perf_counter()
    run_pipeline(root, env)
    first = time.perf_counter() - first
    py = sys.executable
    empty_flow = (
        "import time; t=time.perf_counter(); from prefect import flow\n"
        "f = flow(lambda: 1, name='empty'); t0=time.perf_counter(); f(); print(time.perf_counter()-t0)"
    )
    open_mlflow = (
        "import mlflow, time; t0=time.perf_counter()\n"
        f"mlflow.set_tracking_uri('sqlite:///{root}/mlflow.db')\n"
        "mlflow.search_experiments(); print(time.perf_counter()-t0)"
    )
    parts = {
        "noop_run_total": lambda: timed([py, "-m", "flows.cli", "run", "--workspace", str(root)], root, env),
        "python_start": lambda: timed([py, "-c", "pass"], root, env),
        "import_cli_prefect_mlflow": lambda: timed(
            [py, "-c", "import flows.cli, flows.pipeline, mlflow, prefect"], root, env
        ),
        "dvc_status": lambda: timed([py, "-m", "dvc", "status", "--json"], root, env),
        "prefect_empty_flow": lambda: _inner(py, empty_flow, root, env),
        "mlflow_open_store": lambda: _inner(py, open_mlflow, root, env),
    }
    results = {name: statistics.median(fn() for _ in range(args.repeats)) for name, fn in parts.items()}
    results["first_run_tiny_settings"] = first
    results["goal_seconds"] = 15.0
    results["goal_met"] = results["noop_run_total"] <= 15.0
    print_table(["part", "seconds"], list(results.items()))
    write_result(result_path(args.out, "pipeline_overhead.json"), {"repeats": args.repeats, "seconds": results})


def _inner(py: str, code: str, cwd: Path, env: dict) -> float:
    """Seconds the snippet itself reports (excludes interpreter start and imports)."""
    result = subprocess.run([py, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-500:])
    return float(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
