"""The `modhifi prune` contract: JSON metrics, a reloadable pruned checkpoint with its
lineage, and bad input refused with exit code 2 and nothing written."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from modhifi_core.checkpoint import load_checkpoint
from modhifi_core.data import load_from_spec
from modhifi_core.safe_io import sha256_file
from modhifi_core.training import accuracy


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("method", ["modhifi", "magnitude", "random"])
def test_prune_prints_the_contract_and_writes_a_reloadable_checkpoint(tiny_digits_checkpoint, tmp_path, capsys, method):
    out = tmp_path / f"{method}.pt"
    args = ["prune", "--model", str(tiny_digits_checkpoint), "--target-flops", "0.5", "--method", method]
    args += ["--calibration", "real", "--out", str(out), "--latency-repeats", "2", "--json"]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    for key in ("flops_ratio", "params_ratio", "test_accuracy", "latency_speedup"):
        assert isinstance(result[key], float), key
    assert abs(result["flops_ratio"] - 0.5) <= 0.02
    assert 0 < result["params_ratio"] < 1 and 0 <= result["test_accuracy"] <= 100 and result["latency_speedup"] > 0
    ckpt = load_checkpoint(out)
    assert result["sha256"] == ckpt.sha256
    assert ckpt.metadata["parents"] == {"model": sha256_file(tiny_digits_checkpoint)}
    assert ckpt.metadata["params"]["method"] == method and ckpt.metadata["params"]["target_flops"] == 0.5
    assert ckpt.config.layer_shapes, "the pruned shapes are recorded in the config"
    report = ckpt.metadata["report"]
    assert report["layers"]["layer1.0.conv1"]["out_channels"][1] < 8
    data = load_from_spec(ckpt.metadata["data"])
    assert accuracy(ckpt.model, data.test) == pytest.approx(result["test_accuracy"])


@pytest.mark.parametrize("calibration", [None, "gaussian"], ids=["default (synthetic)", "gaussian"])
def test_data_free_calibrations_run(tiny_digits_checkpoint, tmp_path, capsys, calibration):
    out = tmp_path / "g.pt"
    args = ["prune", "--model", str(tiny_digits_checkpoint), "--calibration-samples", "20", "--out", str(out)]
    args += ["--latency-repeats", "1", "--json"] + (["--calibration", calibration] if calibration else [])
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["calibration"] == (calibration or "synthetic")
    assert load_checkpoint(out).metadata["params"]["calibration_samples"] == 20


BAD = [
    (["--target-flops", "0"], "--target-flops: target_flops must be a fraction strictly between 0 and 1, got 0.0"),
    (["--target-flops", "1"], "--target-flops: target_flops must be a fraction strictly between 0 and 1, got 1.0"),
    (["--target-flops", "1.5"], "--target-flops: target_flops must be a fraction strictly between 0 and 1, got 1.5"),
    (["--target-flops", "-0.2"], "--target-flops: target_flops must be a fraction strictly between 0 and 1, got -0.2"),
    (["--target-flops", "0.0005"], "below this architecture's floor of"),
    (["--method", "taylor"], "--method: input should be 'modhifi'"),
    (["--calibration", "imagenet"], "--calibration: input should be 'synthetic', 'real' or 'gaussian'"),
    (["--compensation", "magic"], "--compensation: input should be 'none', 'scalar' or 'full'"),
    (["--allocation", "greedy"], "--allocation: input should be 'uniform' or 'union'"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_exits_2_with_one_line_and_keeps_the_old_output(
    tiny_digits_checkpoint, tmp_path, capsys, extra, message
):
    out = tmp_path / "out.pt"
    out.write_bytes(b"previous artifact")
    args = ["prune", "--model", str(tiny_digits_checkpoint), "--calibration", "real", "--out", str(out), "--overwrite"]
    code, stdout, stderr = run_cli([*args, *extra], capsys)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"previous artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "out.pt"
    code, _, stderr = run_cli(["prune", "--model", str(tmp_path / "nope.pt"), "--out", str(out)], capsys)
    assert code == 2 and "checkpoint not found" in stderr
    assert not out.exists()
