"""Shared fixtures: quiet progress bars, no telemetry, a small trained digits model."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MODHIFI_PROGRESS", "0")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

# The test models are tiny: one thread avoids thread-pool overhead and contention with
# the subprocesses (CLI, DVC stages) that the pipeline tests start.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from modhifi_core.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def tiny_digits_checkpoint(tmp_path_factory, digits):
    """A resnet18 width 8 trained 8 epochs on digits (a few seconds), saved as a checkpoint."""
    from modhifi_core.checkpoint import save_checkpoint
    from modhifi_core.data import data_spec
    from modhifi_core.models import ModelConfig, build_model
    from modhifi_core.training import TrainConfig, train_model

    torch.manual_seed(0)
    config = ModelConfig(name="resnet18", width=8, image_size=8, in_channels=1)
    model = build_model(config)
    train_config = TrainConfig(epochs=8, seed=0)
    train_model(model, digits.train, train_config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, config, metadata={"data": data_spec(), "params": vars(train_config)})
    return path


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> dict:
        import json

        return json.loads(self.stdout.strip().splitlines()[-1])


@pytest.fixture
def cli(capsys):
    """Run `modhifi ARGS` in this process (no interpreter start-up); returns exit code and output."""
    from flows.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run
