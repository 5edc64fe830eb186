"""Issue 15's bad inputs, one CLI-level test each: real files, the exit code and the one
error line asserted, and the files around hashed before and after (nothing written or
changed on a refusal)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (the evidence that a refusal wrote nothing)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line(result, *needles: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


class Canary:
    """A pickle whose loading would create `path` (it must never appear)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture
def model(tmp_path, tiny_digits_checkpoint):
    path = tmp_path / "model.pt"
    shutil.copy(tiny_digits_checkpoint, path)
    return path


# --- 1. --out ----------------------------------------------------------------------------

COMMANDS = {
    "train": ["train", "--width", "4", "--epochs", "1"],
    "prune": ["prune", "--model", "{model}", "--calibration", "gaussian", "--calibration-samples", "16"],
    "unlearn": ["unlearn", "--model", "{model}", "--forget-class", "3", "--method", "ft"],
    "finetune": ["finetune", "--model", "{model}", "--data", "real", "--epochs", "0"],
}


def _command(name: str, model: Path, out: Path) -> list[str]:
    return [a.replace("{model}", str(model)) for a in COMMANDS[name]] + ["--out", str(out)]


@pytest.mark.parametrize("name", COMMANDS)
def test_out_existing_file_is_refused_without_overwrite(cli, tmp_path, model, name):
    out = tmp_path / "existing.pt"
    out.write_bytes(b"the user's file")
    before = hashes(tmp_path)
    result = cli(*_command(name, model, out))
    assert result.returncode == 2
    one_line(result, f"--out {out} already exists; pass --overwrite")
    assert hashes(tmp_path) == before


def test_out_existing_file_is_replaced_with_overwrite(cli, tmp_path):
    out = tmp_path / "existing.pt"
    out.write_bytes(b"the user's file")
    result = cli(*_command("train", Path(), out), "--overwrite", "--json")
    assert result.returncode == 0, result.stderr
    assert result.json()["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("folder", "is a folder; give a checkpoint file path"),
        ("/proc/modhifi-test/model.pt", "cannot write under /proc"),
        ("file-as-parent", "is a file, not a folder"),
    ],
)
def test_out_that_cannot_be_written_is_refused_before_any_work(cli, tmp_path, model, name, where, message):
    """Tests run as root, where chmod stops no write: /proc and a file used as a parent
    folder are paths that even root cannot create."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    (tmp_path / "folder").mkdir()
    out = {"folder": tmp_path / "folder", "file-as-parent": blocker / "sub" / "model.pt"}.get(where, Path(where))
    before = hashes(tmp_path)
    start = time.perf_counter()
    result = cli(*_command(name, model, out))
    assert result.returncode == 2
    one_line(result, str(out), message)
    assert time.perf_counter() - start < 5  # refused up front, not after training
    assert hashes(tmp_path) == before


def test_synthesize_out_folder_is_refused_unless_overwrite(cli, tmp_path, model):
    out = tmp_path / "samples"
    args = ["synthesize", "--model", model, "--method", "gaussian", "--per-class", "2", "--out", out]
    assert cli(*args).returncode == 0
    before = hashes(tmp_path)
    result = cli(*args, "--seed", "1")
    assert result.returncode == 2
    one_line(result, f"--out {out} already exists and is not empty; pass --overwrite")
    assert hashes(tmp_path) == before
    assert cli(*args, "--seed", "1", "--overwrite").returncode == 0
    assert hashes(tmp_path) != before
    (tmp_path / "a-file").write_text("x")  # not the model: that is the input (test_hardening_round2)
    for target, message in [(Path("/proc/modhifi-samples"), "/proc"), (tmp_path / "a-file", "is a file")]:
        result = cli(*args[:-1], target)
        assert result.returncode == 2
        one_line(result, message)


# --- 2, 3. corrupt and NaN checkpoints ---------------------------------------------------


def _member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """(start, size) in the file of every zip member's data (uncompressed, as torch stores it)."""
    offsets = {}
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
            extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
            offsets[info.filename] = (info.header_offset + 30 + name_len + extra_len, info.file_size)
    return offsets


def _flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_byte_flipped_in_the_tensor_data_is_refused(cli, model):
    result = cli("evaluate", "--model", model)
    assert result.returncode == 0, result.stderr
    offsets = _member_offsets(model)
    largest = max((k for k in offsets if "/data/" in k), key=lambda k: offsets[k][1])
    start, size = offsets[largest]
    _flip(model, start + size // 2)
    before = hashes(model.parent)
    result = cli("evaluate", "--model", model)
    assert result.returncode == 2
    one_line(result, f"{model} is corrupt: its content does not match the digest it carries")
    assert hashes(model.parent) == before


def test_a_byte_flipped_in_the_pickle_is_refused(cli, model):
    offsets = _member_offsets(model)
    pickle_member = next(k for k in offsets if k.endswith("data.pkl"))
    start, size = offsets[pickle_member]
    _flip(model, start + size // 2)
    result = cli("evaluate", "--model", model)
    assert result.returncode == 2
    one_line(result, str(model))


def test_every_flipped_byte_is_refused_or_harmless(model):
    """Flip one byte at 120 evenly spaced places: each file either fails to load (torch or
    the digest) or loads exactly the original content (the byte was zip padding or an
    unused header field); never a silently different model."""
    from modhifi_core.checkpoint import load_checkpoint
    from modhifi_core.errors import InputError

    reference = load_checkpoint(model)
    original = model.read_bytes()
    refused = harmless = 0
    flipped = model.with_name("flipped.pt")
    for position in range(0, len(original), len(original) // 120):
        flipped.write_bytes(original)
        _flip(flipped, position)
        try:
            loaded = load_checkpoint(flipped)
        except InputError:
            refused += 1
            continue
        state, expected = loaded.model.state_dict(), reference.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items()), position
        assert (loaded.metadata, loaded.config) == (reference.metadata, reference.config), position
        harmless += 1
    assert refused > 100  # most bytes are tensor data, covered by the digest


def test_a_checkpoint_without_digest_still_loads(tmp_path, model):
    """Checkpoints written before the digest existed are accepted (checkpoint.py's docstring)."""
    from modhifi_core.checkpoint import load_checkpoint

    payload = torch.load(model, weights_only=True)
    assert payload.pop("digest")["algorithm"] == "sha256"
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    assert load_checkpoint(old).config == load_checkpoint(model).config


def test_nan_weights_are_refused_naming_the_tensor(cli, tmp_path, model):
    from modhifi_core.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(model)
    with torch.no_grad():
        ckpt.model.layer1[0].conv1.weight[0, 0, 0, 0] = float("nan")
    broken = tmp_path / "nan.pt"
    save_checkpoint(broken, ckpt.model, ckpt.config, ckpt.metadata)
    result = cli("evaluate", "--model", broken)
    assert result.returncode == 2
    one_line(result, f"{broken}: weights layer1.0.conv1.weight contain NaN or inf")


# --- 4. too large for memory ------------------------------------------------------------


def test_an_architecture_too_large_for_memory_is_refused_with_its_size(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("kinds.zoo.memory.available_memory_bytes", lambda: 8 * 2**30)
    out = tmp_path / "huge.pt"
    start = time.perf_counter()
    result = cli("train", "--model", "vgg19", "--width", "1024", "--out", out)
    assert result.returncode == 2
    # 5.1e9 float32 parameters, four copies while training (weights, grads, momentum, save)
    one_line(result, "(5,124,834,346 float32 parameters) needs about 76.4 GiB of memory, but only 8.0 GiB")
    assert time.perf_counter() - start < 5 and not out.exists()


def test_synthesize_too_many_samples_is_refused_with_its_size(cli, tmp_path, model):
    out = tmp_path / "samples"
    before = hashes(tmp_path)
    result = cli("synthesize", "--model", model, "--per-class", str(10**9), "--method", "gaussian", "--out", out)
    assert result.returncode == 2
    one_line(result, "synthesising 10,000,000,000 samples of shape (1, 8, 8) needs about 7,376.1 GiB of memory")
    assert hashes(tmp_path) == before


# --- 5, 8. hostile pickles ---------------------------------------------------------------


def test_lineage_of_a_hostile_pickle_exits_2_with_the_refusal(cli, tmp_path):
    canary = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "modhifi-checkpoint", "payload": Canary(canary)}, evil)
    before = hashes(tmp_path)
    result = cli("lineage", str(evil))
    assert result.returncode == 2
    one_line(result, f"refusing to load {evil}", "could run code")
    assert "UserWarning" not in result.stderr
    assert "refused:" in result.stdout  # the report still says what it could read
    assert not canary.exists() and hashes(tmp_path) == before


def test_a_hostile_sample_file_is_refused_without_advising_weights_only_false(cli, tmp_path, model):
    canary = tmp_path / "pwned"
    folder = tmp_path / "samples"
    folder.mkdir()
    torch.save({"images": torch.zeros(2, 1, 8, 8), "labels": Canary(canary)}, folder / "a.pt")
    before = hashes(tmp_path)
    args = ["synthesize", "--model", model, "--method", "folder", "--source", folder, "--out", tmp_path / "out"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cli(*args)
    assert result.returncode == 2
    line = one_line(result, f"refusing to load {folder / 'a.pt'}", "could run code")
    assert "weights_only" not in line
    assert not canary.exists() and hashes(tmp_path) == before


# --- 6, 7. broken dvc.yaml and params.yaml -----------------------------------------------


def _workspace(root: Path) -> Path:
    root.mkdir()
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return root


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages:\n  train_base: [unclosed\n", "not valid YAML at line"),
        ("", "is empty"),
        ("- train_base\n- prune\n", "expected a mapping with `stages:`, got a list"),
        ("stages:\n  train_base:\n    deps: [tasks/train_base.py]\n", "stage 'train_base' has no 'cmd'"),
        ("stages:\n  train_base: modhifi stage train_base\n", "stage 'train_base' must be a mapping"),
        ("stages: {}\n", "must be a non-empty mapping"),
    ],
)
@pytest.mark.parametrize("command", [("stage", "train_base"), ("run",)])
def test_a_broken_dvc_yaml_is_refused_naming_the_file(cli, tmp_path, text, message, command):
    """`modhifi stage` reads dvc.yaml and names what is wrong with it; `modhifi run` writes
    the kind's dvc.yaml itself, and refuses to overwrite one it did not write."""
    ws = _workspace(tmp_path / "ws")
    (ws / "dvc.yaml").write_text(text)
    before = hashes(ws)
    result = cli(*command, "--workspace", ws)
    assert result.returncode == 2
    if command == ("run",):
        message = "was not written by modhifi: `modhifi run` writes the dvc.yaml of the model's kind there"
    one_line(result, str(ws / "dvc.yaml"), message)
    assert hashes(ws) == before  # `run`: refused before Prefect, DVC or MLflow wrote anything


def _duplicate(key_line: str) -> Callable[[str], str]:
    return lambda text: text.replace(key_line, key_line + key_line, 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda text: "", "is empty; it must hold seed, model and the sections of its model's kind"),
        (lambda text: "# only comments\n", "is empty"),
        (
            lambda text: text.split("\nprune:")[0] + "\n",
            "missing section(s) prune, unlearn, finetune, evaluate, compute (a zoo model reads them)",
        ),
        (_duplicate("  epochs: 30\n"), "duplicated key 'epochs' at line"),
        (lambda text: text + "seed: 1\n", "duplicated key 'seed' at line"),
    ],
)
def test_a_broken_params_yaml_is_refused_up_front_writing_nothing(cli, tmp_path, change, message):
    ws = _workspace(tmp_path / "ws")
    params = ws / "params.yaml"
    params.write_text(change(params.read_text()))
    before = hashes(ws)
    result = cli("run", "--workspace", ws)
    assert result.returncode == 2
    one_line(result, str(params), message)
    assert hashes(ws) == before and not (ws / "mlflow.db").exists()


def test_the_committed_and_the_test_params_still_load():
    from tasks.params import load_params, validate_params
    from tests.pipeline_workspace import tiny_params

    load_params(REPO / "params.yaml")
    validate_params(tiny_params())


# --- 9. a killed sweep -------------------------------------------------------------------


def test_a_sweep_killed_with_sigkill_leaves_params_yaml_restorable(cli, tmp_path):
    """SIGKILL the sweep once it has written its first point into params.yaml: the next
    command that loads the params puts the user's file back, byte for byte (comments too)."""
    from tests.pipeline_workspace import isolated_env, make_workspace

    ws = make_workspace(tmp_path / "ws")
    params = ws / "params.yaml"
    params.write_text("# the user's own comment\n" + params.read_text())
    original = params.read_bytes()
    env = {**isolated_env(tmp_path / "home"), "PYTHONPATH": str(ws)}
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "sweep", "prune.target_flops=0.3,0.4", "--workspace", str(ws)],
        cwd=ws,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while params.read_bytes() == original and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert params.read_bytes() != original, "the sweep never wrote a point: the test did not test anything"
    assert b"the user's own comment" not in params.read_bytes()
    result = cli("run", "--workspace", ws, "--flow", "no-such-flow")  # loads params.yaml first
    assert result.returncode == 2
    assert "restored" in result.stderr and "interrupted sweep" in result.stderr
    assert params.read_bytes() == original
    assert not list(ws.glob(".params.yaml.sweep-backup*"))


def test_a_live_sweeps_backup_is_left_alone(tmp_path):
    from modhifi_core.safe_io import atomic_write_json
    from tasks.params import restore_interrupted_sweep, sweep_backup_path

    params = tmp_path / "params.yaml"
    params.write_text("point: 1\n")
    atomic_write_json(sweep_backup_path(params), {"pid": os.getpid(), "params": "user: 1\n"})
    assert not restore_interrupted_sweep(params)  # a stage of the running sweep reading its point
    assert params.read_text() == "point: 1\n"


# --- 10. the parent chain inside the checkpoints -----------------------------------------


def _child(parent_path: Path, path: Path, operation: str, **parents: Path) -> Path:
    from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
    from modhifi_core.metadata import read_metadata
    from modhifi_core.safe_io import sha256_file

    parent = load_checkpoint(parent_path)
    recorded = {role: sha256_file(p) for role, p in parents.items()}
    meta = read_metadata(parent.metadata).derive(operation, parent.sha256, parents=recorded)
    save_checkpoint(path, parent.model, parent.config, meta.to_dict())
    return path


def test_lineage_verify_walks_the_parent_chain_and_fails_on_a_break(cli, tmp_path, model):
    chain = tmp_path / "chain"
    chain.mkdir()
    base = chain / "base.pt"
    shutil.copy(model, base)
    pruned = _child(base, chain / "pruned.pt", "prune")
    final = _child(pruned, chain / "final.pt", "finetune", teacher=base)

    intact = cli("lineage", final, "--verify", "--format", "json")
    assert intact.returncode == 3  # no dvc.lock: unverifiable, but the chain itself holds
    one_line(intact, "no dvc.lock found")
    links = {(Path(link["file"]).name, link["role"], Path(link["parent"]).name) for link in intact.json()["chain"]}
    assert links == {
        ("final.pt", "model", "pruned.pt"),
        ("final.pt", "teacher", "base.pt"),
        ("pruned.pt", "model", "base.pt"),
    }

    # an auditor's nightmare: the pruned model swapped for another valid checkpoint
    _retrained(pruned).replace(pruned)
    before = hashes(tmp_path)
    broken = cli("lineage", final, "--verify")
    assert broken.returncode == 3
    one_line(broken, f"parent chain broken: {final.resolve()} records its model as sha256")
    assert hashes(tmp_path) == before


def test_lineage_verify_checks_the_statistics_and_scores_a_pruned_model_started_from(cli, tmp_path, model):
    chain = tmp_path / "chain"
    chain.mkdir()
    base = chain / "base.pt"
    shutil.copy(model, base)
    inputs = {"statistics": chain / "statistics.pt", "scores": chain / "scores.pt"}
    for name, path in inputs.items():
        torch.save({"kind": "saliency", "layers": {name: torch.ones(2, 2)}}, path)
    pruned = _child(base, chain / "pruned.pt", "prune", **inputs)

    intact = cli("lineage", pruned, "--verify", "--format", "json")
    links = {(link["role"], Path(link["parent"]).name) for link in intact.json()["chain"]}
    assert links == {("model", "base.pt"), ("statistics", "statistics.pt"), ("scores", "scores.pt")}

    torch.save({"kind": "saliency", "layers": {"other": torch.zeros(2, 2)}}, inputs["scores"])
    broken = cli("lineage", pruned, "--verify")
    assert broken.returncode == 3
    one_line(broken, f"parent chain broken: {pruned.resolve()} records its scores as sha256")


def _retrained(path: Path) -> Path:
    """Another valid checkpoint with the same parent (different weights)."""
    from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
    from modhifi_core.models import classifier_name

    ckpt = load_checkpoint(path)
    with torch.no_grad():
        ckpt.model.get_submodule(classifier_name(ckpt.model)).bias.add_(0.01)
    out = path.with_name("retrained.pt")
    save_checkpoint(out, ckpt.model, ckpt.config, ckpt.metadata)
    return out


# --- 11. reproducibility -----------------------------------------------------------------


def test_two_runs_with_one_seed_give_byte_identical_checkpoints(tmp_path, model):
    from modhifi_core.calibration import calibration_set
    from modhifi_core.checkpoint import load_checkpoint
    from modhifi_core.data import load_from_spec
    from modhifi_core.metadata import read_metadata
    from modhifi_core.operations.prune import prune_checkpoint
    from modhifi_core.operations.train import train_from_params

    trained = []
    for run in range(2):
        outcome = train_from_params(width=4, epochs=1, seed=0)
        outcome.save(tmp_path / f"train{run}.pt")
        trained.append((tmp_path / f"train{run}.pt").read_bytes())
    assert trained[0] == trained[1]

    source = load_checkpoint(model)
    data = load_from_spec(read_metadata(source.metadata).data)
    pruned = []
    for run in range(2):
        images = calibration_set("gaussian", source.model, data, 64, 0)
        outcome = prune_checkpoint(
            source, images, data, target_flops=0.5, calibration_source="gaussian", latency_repeats=2
        )
        outcome.save(tmp_path / f"pruned{run}.pt")
        pruned.append((tmp_path / f"pruned{run}.pt").read_bytes())
        assert "latency_speedup" in outcome.metrics  # measured, but kept out of the checkpoint
    assert pruned[0] == pruned[1]
    stored = json.dumps(load_checkpoint(tmp_path / "pruned0.pt").metadata)
    assert "latency_speedup" not in stored and "latency_dense_ms" not in stored and "seconds" not in stored


# --- a full disk, simulated with ulimit -f -----------------------------------------------


def test_a_full_disk_gives_one_line_and_leaves_the_previous_file(tmp_path):
    """`ulimit -f 64` (64 KiB per file): the checkpoint (~200 KiB) cannot be written. The
    command says so in one line, the previous --out file is intact, no temporary file is left."""
    out = tmp_path / "model.pt"
    out.write_bytes(b"the previous checkpoint")
    before = hashes(tmp_path)
    command = f"ulimit -f 64; exec {sys.executable} -m flows.cli train --width 4 --epochs 1 --overwrite --out {out}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "MODHIFI_PROGRESS": "0"}
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    one_line(result, f"cannot write {out}: File too large")
    assert hashes(tmp_path) == before


def test_atomic_writes_get_the_users_umask_not_0600(tmp_path):
    from modhifi_core.safe_io import atomic_write_text

    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
