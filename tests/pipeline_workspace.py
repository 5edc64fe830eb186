"""A throw-away pipeline workspace for tests: the repo's dvc.yaml and code, tiny params,
its own git repository, DVC project, DVC cache, Prefect home and MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CODE = ("modhifi_core", "kinds", "tasks", "flows")

TINY = {
    "train": {"epochs": 3},
    "model": {"width": 4},
    "synthesize": {"per_class": 6, "steps": 20},
    "collect": {"batch_size": 64},
    "finetune": {"epochs": 1},
    "prune": {"latency_batch": 8, "latency_repeats": 3},
}


def tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    return params


def language_params(folder: Path, eval_text: Path, **language) -> dict:
    """Tiny params of a language-model run on the Hugging Face folder `folder` (8 x 16
    calibration tokens, 4 held-out windows), `language` overriding its language keys: only
    the sections a language model reads (seed, model.source, cluster, language)."""
    from tasks.params import ClusterParams, ComputeParams, LanguageParams

    tiny = {"samples": 8, "length": 16, "eval_text": str(eval_text), "eval_samples": 4}
    tiny |= {"latency_repeats": 1, "batch_size": 4}
    return {
        "seed": 0,
        "model": {"source": f"hf:{folder}"},
        "cluster": ClusterParams().model_dump(),
        "compute": ComputeParams().model_dump(),
        "language": LanguageParams().model_dump() | tiny | language,
    }


def image_params(folder: Path, **unlearn) -> dict:
    """Tiny params of a run on the Hugging Face image classifier `folder`, evaluated on
    digits (`unlearn` overriding its unlearn keys; a short relearning attack): only the
    sections an image classifier reads (`kinds.image.ImageClassifierKind.sections`)."""
    from tasks import params as schema

    tiny = {
        "synthesize": {"per_class": 6, "steps": 20},
        "collect": {"samples": 60, "batch_size": 32},
        "prune": {"latency_batch": 8, "latency_repeats": 3},
        "unlearn": unlearn,
        "evaluate": {"relearn_steps": 10},
    }
    sections = {
        "data": schema.DataParams,
        "synthesize": schema.SynthesizeParams,
        "collect": schema.CollectParams,
        "prune": schema.PruneParams,
        "unlearn": schema.UnlearnParams,
        "evaluate": schema.EvaluateParams,
        "cluster": schema.ClusterParams,
        "compute": schema.ComputeParams,
    }
    params = {"seed": 0, "model": {"source": f"hf:{folder}"}}
    return params | {name: section().model_dump() | tiny.get(name, {}) for name, section in sections.items()}


def make_workspace(root: Path, kind: object = None) -> Path:
    """A workspace at `root` with the repo's code and the dvc.yaml of `kind` (a
    `kinds.base.ModelKind`; default the zoo's) as `modhifi run` generates it."""
    from kinds import kind_class
    from tasks.dag import write_dvc_yaml

    root.mkdir(parents=True, exist_ok=True)
    for folder in CODE:
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_dvc_yaml(root, kind or kind_class("zoo")(None))
    write_params(root, tiny_params())
    ignored = ("/mlflow.db", "/mlartifacts/", "/.prefect/", "/.modhifi-run.lock", "/.modhifi-run.lock.pid")
    (root / ".gitignore").write_text("".join(line + "\n" for line in ignored))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "workspace")
    return root


def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def isolated_env(home: Path) -> dict:
    """Environment that keeps DVC, Prefect and MLflow state inside `home`."""
    return {
        **os.environ,
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "prefect-results"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MODHIFI_PROGRESS": "0",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def modhifi(root: Path, env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    # tasks/ and flows/ are not installed: outside a workspace they come from this checkout.
    path = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=root,
        env={**env, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_pipeline(root: Path, env: dict, *extra: str) -> dict:
    return run_pipeline_showing(root, env, *extra)[0]


def run_pipeline_showing(root: Path, env: dict, *extra: str) -> tuple[dict, str]:
    """`modhifi run --json`: the summary (stdout's only line) and what it showed on stderr."""
    result = modhifi(root, env, "run", "--workspace", str(root), "--json", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout[-3000:]
    return json.loads(result.stdout), result.stderr


def dvc_status(root: Path, env: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.strip()
    return json.loads(text[text.index("{") :]) if "{" in text else {}


def run_without_modhifi(body: str, folder: Path, env: dict) -> str:
    """Run `body` (Python; `sys.argv[1]` is `folder`) in a fresh interpreter from which
    modhifi cannot be imported (no editable finder, no checkout on sys.path, no PYTHONPATH;
    HF_HUB_OFFLINE=1): what a user with only transformers sees. Returns its stdout."""
    code = (
        "import sys, importlib.util\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]\n"
        "sys.path[:] = [p for p in sys.path if p and p.rstrip('/') != sys.argv[2]]\n"
        "assert importlib.util.find_spec('modhifi_core') is None, 'modhifi is importable'\n"
    ) + body
    clean = {k: v for k, v in env.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(REPO)], env=clean, cwd="/", capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def refused_at_start(root: Path, env: dict) -> str:
    """`modhifi run --json` on params that must be refused before any stage: exit 2, no
    traceback, no stage output; returns the last stderr line (the one error line)."""
    result = modhifi(root, env, "run", "--workspace", str(root), "--json")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (root / "outputs" / "base").exists()
    return result.stderr.strip().splitlines()[-1]
