"""The `modhifi unlearn` contract and `modhifi evaluate --forget-class`: JSON metrics,
saved checkpoints with lineage and masks, bad input -> one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from flows.cli import main
from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.unstructured import Masks


def run_cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def run_in_process(capsys, *args):
    """`modhifi ARGS` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as stop:
        main([*map(str, args)])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def test_unlearn_json_contract_and_evaluate_forget_class(tiny_digits_checkpoint, tmp_path):
    out = tmp_path / "forgot3.pt"
    result = run_cli("unlearn", "--model", tiny_digits_checkpoint, "--forget-class", 3, "--method", "modhifi",
                     "--forget-data", "real", "--out", out, "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = last_json(result.stdout)
    assert {"UA", "RA", "TA", "MIA", "seconds"} <= set(report)
    assert all(0.0 <= report[k] <= 100.0 for k in ("UA", "RA", "TA", "MIA"))
    assert report["UA"] > 90.0 and report["seconds"] < 60.0
    ckpt = load_checkpoint(out)
    assert ckpt.metadata["operation"] == "unlearn"
    assert ckpt.metadata["parents"]["model"] == load_checkpoint(tiny_digits_checkpoint).sha256
    assert ckpt.metadata["forgotten"] == {"class": 3, "method": "modhifi"}
    # evaluate --forget-class reports the same metrics for any model, here the unlearned one.
    evaluated = run_cli("evaluate", "--model", out, "--dataset", "digits", "--forget-class", 3, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = last_json(evaluated.stdout)
    assert all(metrics[k] == pytest.approx(report[k]) for k in ("UA", "RA", "TA", "MIA"))
    assert "per_class_accuracy" in metrics  # the plain evaluation is still there
    # where the forgetting lives (issue 24): unlearn audits against its source model, evaluate
    # (no source model given) with the probe and relearning alone; the same probe figures
    assert {"original_probe_forget_accuracy", "head_reset_relearn_forget_steps"} <= set(report)
    assert metrics["probe_forget_accuracy"] == pytest.approx(report["probe_forget_accuracy"])
    assert metrics["forgetting_lives_in"] in ("features", "head") and "forgetting_verdict" in metrics


def test_a_requested_logit_mask_is_recorded_as_one(cli, tiny_digits_checkpoint, tmp_path):
    out = tmp_path / "masked3.pt"
    result = cli("unlearn", "--model", tiny_digits_checkpoint, "--forget-class", 3, "--method", "logit-mask",
                 "--forget-data", "real", "--out", out, "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["UA"] > 90.0 and report["forgetting_is_logit_mask"] is True
    assert report["forgetting_lives_in"] == "head"  # the audit is not fooled
    meta = load_checkpoint(out).metadata
    assert meta["forgotten"] == {"class": 3, "method": "logit-mask", "logit_mask": True}
    assert meta["report"]["forgetting"].startswith("logit mask")


def test_prune_then_unlearn_keeps_the_mask_in_the_checkpoint(tiny_digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "sparse_ft.pt"
    code, stdout, stderr = run_in_process(
        capsys, "unlearn", "--model", tiny_digits_checkpoint, "--forget-random", 0.1, "--method", "ft",
        "--set", "epochs=1", "--prune", "omp", "--sparsity", 0.9, "--retrain-epochs", 1, "--out", out, "--json",
    )  # fmt: skip
    assert code == 0, stderr
    report = last_json(stdout)
    assert report["sparsity"] == pytest.approx(0.9, abs=1e-5) and report["prune_seconds"] > 0
    assert report["forget"].startswith("random 10%")
    ckpt = load_checkpoint(out)
    masks = Masks.from_extra(ckpt.extra, ckpt.model)
    assert masks is not None and masks.violations(ckpt.model) == 0
    assert ckpt.metadata["params"]["hyperparameters"]["epochs"] == 1
    # Unlearning the sparse checkpoint again enforces its stored mask.
    again = tmp_path / "sparse_ga.pt"
    code, stdout, _ = run_in_process(
        capsys, "unlearn", "--model", out, "--forget-class", 1, "--method", "ga", "--out", again, "--json"
    )
    assert code == 0 and last_json(stdout)["sparsity"] == pytest.approx(0.9, abs=1e-5)
    assert masks.violations(load_checkpoint(again).model) == 0


def test_retrain_uses_the_checkpoints_training_recipe(tiny_digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "retrained.pt"
    code, stdout, stderr = run_in_process(
        capsys, "unlearn", "--model", tiny_digits_checkpoint, "--forget-class", 5, "--method", "retrain",
        "--out", out, "--json",
    )  # fmt: skip
    assert code == 0, stderr
    assert last_json(stdout)["UA"] == 100.0
    used = load_checkpoint(out).metadata["params"]["hyperparameters"]
    assert used["epochs"] == 8  # the tiny model's recipe, not Retrain's 30-epoch default
    assert torch.equal(torch.tensor(used["lr"]), torch.tensor(0.05))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--forget-class", 10, "--method", "modhifi"], "forget class 10 does not exist: the model has classes 0..9"),
        (["--forget-class", -1, "--method", "modhifi"], "--forget-class: input should be greater than or equal to 0"),
        (
            ["--forget-random", 1.0, "--method", "ft"],
            "--forget-random: forget_random must be a fraction strictly between 0 and 1, got 1.0",
        ),
        (
            ["--forget-random", 0.0, "--method", "ft"],
            "--forget-random: forget_random must be a fraction strictly between 0 and 1, got 0.0",
        ),
        (["--forget-random", 0.9999, "--method", "ft"], "the split leaves no retain data"),
        (["--forget-class", 3, "--method", "unroll"], "--method: input should be 'modhifi', 'retrain', 'ft'"),
        (
            ["--forget-class", 3, "--prune", "omp", "--sparsity", 1.0],
            "--sparsity: input should be less than 1 (got 1.0)",
        ),
        (
            ["--forget-class", 3, "--prune", "omp", "--sparsity", -0.5],
            "--sparsity: input should be greater than or equal to 0",
        ),
        (["--forget-class", 3, "--prune", "snip"], "--prune: input should be 'omp', 'imp' or 'synflow'"),
        (["--forget-class", 3, "--sparsity", 0.5], "--sparsity needs --prune"),
        (["--forget-class", 3, "--forget-random", 0.1], "give exactly one forget set"),
        (["--method", "ft"], "give exactly one forget set"),
        (["--forget-class", 3, "--set", "fraction=1.5"], "fraction must be a number in (0.0, 1.0], got 1.5"),
        (["--forget-class", 3, "--set", "noequals"], "--set expects KEY=VALUE"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tiny_digits_checkpoint, tmp_path, capsys, args, message):
    out = tmp_path / "never.pt"
    code, stdout, stderr = run_in_process(capsys, "unlearn", "--model", tiny_digits_checkpoint, *args, "--out", out)
    assert code == 2
    assert stderr.strip().count("\n") == 0 and message in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_evaluate_forget_class_bad_input(tiny_digits_checkpoint, capsys):
    code, _, stderr = run_in_process(capsys, "evaluate", "--model", tiny_digits_checkpoint, "--forget-class", 12)
    assert code == 2 and "forget class 12 does not exist" in stderr


def test_modhifi_u_is_data_free_by_default(cli, tiny_digits_checkpoint, tmp_path):
    """Without --forget-data, ModHiFi-U scores on samples synthesised from the model."""
    out = tmp_path / "forgot3.pt"
    result = cli("unlearn", "--model", tiny_digits_checkpoint, "--forget-class", 3, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(out).metadata["params"]["data"] == "synthetic"
