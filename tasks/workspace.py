"""Where a pipeline's files live. One workspace = one DVC project (usually the repo root).

Every stage reads its inputs from and writes its outputs to the paths below; dvc.yaml
names the same paths (a test checks they agree).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tasks.params import Params, load_params

# artifact name -> path relative to the workspace root
ARTIFACTS = {
    "base_model": "outputs/base/model.pt",
    "base_metrics": "outputs/base/metrics.json",
    "synthetic": "outputs/synthetic",
    "statistics": "outputs/statistics/statistics.pt",
    "scores": "outputs/scores/scores.pt",
    "scores_csv": "outputs/scores/scores.csv",
    "pruned_model": "outputs/pruned/model.pt",
    "pruned_metrics": "outputs/pruned/metrics.json",
    "pruned_layers": "outputs/pruned/layers.csv",
    "pruned_hf": "outputs/pruned/hf",  # an open-weight model's pruned model in its source's format
    "unlearned_model": "outputs/unlearned/model.pt",
    "unlearned_metrics": "outputs/unlearned/metrics.json",
    "unlearned_hf": "outputs/unlearned/hf",  # an image classifier's unlearned model in its source's format
    "final_model": "outputs/final/model.pt",
    "final_metrics": "outputs/final/metrics.json",
    "evaluation": "outputs/evaluation/metrics.json",
    "per_class": "outputs/evaluation/per_class.csv",
    "report": "outputs/report",
}


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> Workspace:
        return cls(Path(root or os.environ.get("MODHIFI_WORKSPACE") or ".").resolve())

    def artifact(self, name: str) -> Path:
        return self.root / ARTIFACTS[name]

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    def params(self) -> Params:
        return load_params(self.params_file)

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.root / ".prefect"

    @property
    def run_lock(self) -> Path:
        return self.root / ".modhifi-run.lock"
