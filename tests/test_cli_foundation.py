"""The `modhifi` CLI contract: --json last line, exit codes 0 / 2 / 1, --help everywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_train_json_contract_in_a_real_process(tmp_path):
    """The installed entry point, in its own interpreter: JSON on the last stdout line."""
    out = tmp_path / "m.pt"
    args = ["train", "--dataset", "digits", "--out", out, "--width", "4", "--epochs", "3", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0.0 <= report["test_accuracy"] <= 100.0
    assert report["test_accuracy"] > 50.0  # three epochs of a width-4 net already learn digits
    assert out.is_file()


def test_evaluate_json_contract(cli, tiny_digits_checkpoint):
    result = cli("evaluate", "--model", tiny_digits_checkpoint, "--dataset", "digits", "--json")
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert len(report["per_class_accuracy"]) == 10
    assert report["test_accuracy"] > 90.0


def test_evaluate_table_without_json(cli, tiny_digits_checkpoint):
    result = cli("evaluate", "--model", tiny_digits_checkpoint)
    assert result.returncode == 0
    assert "test_accuracy" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--model", "/nonexistent.pt"], "checkpoint not found"),
        (["train", "--out", "x.pt", "--model", "alexnet"], "name: input should be"),
        (["train", "--out", "x.pt", "--dataset", "mnist"], "--dataset: input should be"),
        (["train", "--out", "x.pt", "--epochs", "0"], "--epochs"),
        (["train"], "--out"),
    ],
)
def test_bad_input_exit_2_one_line(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert not (tmp_path / "x.pt").exists()


def test_hostile_checkpoint_via_cli(cli, tmp_path):
    canary = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(
        b"\x80\x02cbuiltins\nopen\nq\x00X"
        + len(str(canary)).to_bytes(4, "little")
        + str(canary).encode()
        + b"X\x01\x00\x00\x00wq\x01\x86q\x02Rq\x03."
    )
    result = cli("evaluate", "--model", evil)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not canary.exists()


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"]])
def test_help(cli, command):
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout
