"""The pipeline against the real Prefect, DVC and MLflow, on tiny settings.

One workspace is taken through a sequence of runs (module-scoped, in order): a first run
executes every stage, an immediate re-run executes none, a params change re-runs only
the stages below it, a code change re-runs from its stage, `dvc repro` and `modhifi run`
agree, and MLflow holds the runs and registered models with their lineage tags.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import pytest
import yaml
from pipeline_workspace import (
    dvc_status,
    isolated_env,
    make_workspace,
    modhifi,
    run_pipeline,
    run_pipeline_showing,
    tiny_params,
    write_params,
)

ALL = ["train_base", "synthesize", "collect", "score", "prune", "unlearn", "finetune", "evaluate", "report"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    home = tmp_path_factory.mktemp("pipeline")
    root = make_workspace(home / "ws")
    return root, isolated_env(home)


def _params(root):
    return yaml.safe_load((root / "params.yaml").read_text())


def test_first_run_executes_every_stage_and_dvc_agrees(ws):
    root, env = ws
    summary, shown = run_pipeline_showing(root, env)
    assert sorted(summary["ran"]) == sorted(ALL)
    # a first run has no dvc.lock: nothing is "missing"; no output folder is empty (DVC's
    # "WARNING: 'outputs/pruned/hf' is empty" at every stage reading the HF export folders)
    assert "warning" not in shown.lower()
    assert not (root / "outputs/pruned/hf").exists()  # a zoo run's pipeline has no Hugging Face export
    assert dvc_status(root, env) == {}
    metrics = summary["metrics"]
    assert metrics["flops_ratio"] == pytest.approx(0.5, abs=0.02)
    assert 0 <= metrics["UA"] <= 100 and 0 <= metrics["MIA"] <= 100
    for name in ("report.md", "report.html", "kept_channels.png", "fidelity_scores.png", "per_class_accuracy.png"):
        assert (root / "outputs/report" / name).stat().st_size > 0
    text = (root / "outputs/report/report.md").read_text()
    assert "round 1 ranked channels by the score stage's scores" in text and "collect's statistics" in text
    # the forgetting audit (issue 24): its figures and verdict in the report and the summary,
    # (the summary table's rows: tests/test_forgetting_audit.py)
    assert {"probe_forget_accuracy", "relearn_forget_steps", "head_reset_relearn_forget_steps"} <= set(metrics)
    assert "feature probe" in text and ("The forgetting lives" in text or "is not forgotten" in text)
    verdict = {"features": "forgotten:", "head": "NOT forgotten:", "not forgotten": "not forgotten:"}
    assert metrics["forgetting_verdict"].startswith(verdict[metrics["forgetting_lives_in"]])  # the summary's row


def test_immediate_rerun_executes_nothing(ws):
    root, env = ws
    summary, shown = run_pipeline_showing(root, env, "--quiet")
    assert summary["ran"] == []
    assert sorted(summary["skipped"]) == sorted(ALL)
    assert shown.strip() == ""  # --quiet: not even the skipped stages


def _shown_stage_lines(shown):
    return [line for line in shown.splitlines() if line.startswith("[")]


def test_changing_forget_class_reruns_only_unlearn_and_after(ws):
    root, env = ws
    params = _params(root)
    params["unlearn"]["forget_class"] = 5
    write_params(root, params)
    progress_on = {key: value for key, value in env.items() if key != "MODHIFI_PROGRESS"}
    summary, shown = run_pipeline_showing(root, progress_on)
    assert summary["ran"] == ["unlearn", "finetune", "evaluate", "report"]
    assert summary["metrics"]["forget_class"] == 5
    assert dvc_status(root, env) == {}
    # Each stage's start and end, live on stderr, in order; the stage's progress between them;
    # nothing else but modhifi's own notes (no Prefect or MLflow log lines).
    order, lines = summary["order"], _shown_stage_lines(shown)
    for i, name in enumerate(order, 1):
        if name in summary["skipped"]:
            assert f"[{i}/9] {name} skipped (unchanged)" in lines
        else:
            start = lines.index(f"[{i}/9] {name} started")
            assert re.fullmatch(rf"\[{i}/9\] {name} ran in \d+\.\d s", lines[start + 1])
    finetune = shown.index("finetune started")
    assert "      finetune:" in shown[finetune : shown.index("finetune ran")]  # its tqdm bar
    for line in shown.splitlines():
        assert re.match(r"\[\d/9\] |      |Prefect: |\d of 9 stages changed", line), line


def test_changing_prune_code_reruns_from_prune(ws):
    root, env = ws
    with open(root / "kinds/zoo/prune.py", "a") as handle:
        handle.write("\n# a change to the prune stage's code\n")
    summary = run_pipeline(root, env)
    # The comment changes no weights: the pruned checkpoint is byte-identical (no timings
    # inside), so DVC skips unlearn and finetune; its new latency figures re-run evaluate.
    assert summary["ran"] == ["prune", "evaluate", "report"]
    assert dvc_status(root, env) == {}


def test_editing_another_kinds_code_changes_no_stage_of_a_zoo_run(ws):
    """A zoo run's stages depend on the zoo's code only: an edit of the ViT/Swin MLP pruner,
    the language kinds' adapter or the image kinds' stages leaves `dvc status` clean."""
    root, env = ws
    edited = ("modhifi_core/vision/mlp.py", "kinds/language/__init__.py", "kinds/image/prune.py")
    originals = {name: (root / name).read_text() for name in edited}
    try:
        for name, text in originals.items():
            (root / name).write_text(text + "\n# an edit of another kind's code\n")
        assert dvc_status(root, env) == {}
    finally:
        for name, text in originals.items():
            (root / name).write_text(text)


def test_editing_fidelity_code_marks_every_stage_that_runs_it_changed(ws):
    """The DAG knows what a stage runs: score and prune both execute fidelity.py."""
    root, env = ws
    path = root / "modhifi_core/fidelity.py"
    original = path.read_text()
    path.write_text(original + "\n# a change to the fidelity code\n")
    try:
        changed = {key.split(":")[-1] for key in dvc_status(root, env)}
    finally:
        path.write_text(original)
    assert {"collect", "score", "prune"} <= changed
    assert "train_base" not in changed and "synthesize" not in changed
    assert dvc_status(root, env) == {}


def test_after_dvc_repro_modhifi_run_executes_nothing(ws):
    root, env = ws
    params = _params(root)
    params["finetune"]["lr"] = 0.005
    write_params(root, params)
    repro = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert repro.returncode == 0, repro.stderr[-2000:]
    assert run_pipeline(root, env)["ran"] == []


def test_mlflow_holds_parent_and_stage_runs_with_lineage_tags(ws):
    import mlflow
    from mlflow.tracking import MlflowClient

    root, _ = ws
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("modhifi")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and "flow" in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert parents and {r.data.tags["stage"] for r in children} >= set(ALL)
    first_parent = min(parents, key=lambda r: r.info.start_time)
    stages_of_first = {
        r.data.tags["stage"] for r in children if r.data.tags["mlflow.parentRunId"] == first_parent.info.run_id
    }
    assert stages_of_first == set(ALL)
    assert first_parent.data.tags["prefect_flow_run_id"] not in ("", "none")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    for name, stage, artifact in (
        ("modhifi-pruned", "prune", "outputs/pruned/model.pt"),
        ("modhifi-unlearned", "unlearn", "outputs/unlearned/model.pt"),
    ):
        versions = client.search_model_versions(f"name='{name}'")
        assert versions, name
        latest = max(versions, key=lambda v: int(v.version))
        md5 = next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == artifact)
        assert latest.tags["dvc_md5"] == md5
        assert latest.tags["git_commit"] and latest.tags["prefect_flow_run_id"] not in ("", "none")
        assert len(latest.tags["parent_model_sha256"]) == 64


def test_lineage_lists_every_ancestor_with_dvc_lock_hashes(ws):
    root, env = ws
    result = modhifi(root, env, "lineage", "outputs/final/model.pt", "--format", "json", "--verify")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert record["produced_by"] == "finetune" and record["verified"] is True
    names = [stage["name"] for stage in record["stages"]]
    assert set(names) == {"train_base", "synthesize", "collect", "score", "prune", "unlearn", "finetune"}
    assert names.index("train_base") < names.index("collect") < names.index("score") < names.index("prune")
    assert names.index("prune") < names.index("unlearn")
    # the pruned ancestor records collect's statistics and score's scores by sha256, verified on disk
    inputs = {link["role"]: link["parent"] for link in record["chain"] if link["role"] in ("statistics", "scores")}
    assert inputs["statistics"].endswith("outputs/statistics/statistics.pt")
    assert inputs["scores"].endswith("outputs/scores/scores.pt")
    for stage in record["stages"]:
        assert stage["cmd"] == lock[stage["name"]]["cmd"]
        assert {d["path"]: d["md5"] for d in stage["deps"]} == {
            d["path"]: d["md5"] for d in lock[stage["name"]]["deps"]
        }
        assert {o["path"]: o["md5"] for o in stage["outs"]} == {
            o["path"]: o["md5"] for o in lock[stage["name"]]["outs"]
        }
        assert stage["run"] and stage["run"]["run_id"] and stage["run"]["git_commit"], stage["name"]
    unlearn = next(s for s in record["stages"] if s["name"] == "unlearn")
    assert unlearn["params"]["unlearn"]["forget_class"] == 5
    assert {"UA", "RA", "TA", "MIA", "before_UA"} <= set(unlearn["metrics"])
    assert record["checkpoint"]["parents"]


def test_lineage_markdown_shows_the_evidence(ws):
    root, env = ws
    result = modhifi(root, env, "lineage", "outputs/unlearned/model.pt")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Unlearning evidence: class 5" in result.stdout and "MIA-Efficacy" in result.stdout
    assert "Where the forgetting lives (audit of the unlearned model)" in result.stdout


def test_lineage_of_a_copy_outside_the_workspace_says_what_it_cannot_verify(ws, tmp_path):
    root, env = ws
    copy = tmp_path / "shipped.pt"
    copy.write_bytes((root / "outputs/unlearned/model.pt").read_bytes())
    result = modhifi(tmp_path, env, "lineage", str(copy), "--format", "json", "--verify")
    assert result.returncode == 3
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["unverifiable"] and record["checkpoint"]["stage"] == "unlearn"
    assert "model" in record["checkpoint"]["parents"]


def test_tampered_ancestor_fails_verification_and_is_named(ws):
    root, env = ws
    base = root / "outputs/base/model.pt"
    original = base.read_bytes()
    try:
        base.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        result = modhifi(root, env, "lineage", "outputs/final/model.pt", "--verify")
        assert result.returncode == 3
        assert "outputs/base/model.pt" in result.stderr
    finally:
        base.write_bytes(original)
    assert dvc_status(root, env) == {}


def test_tampered_artifact_is_reported_and_restored_before_anything_runs(ws):
    root, env = ws
    model = root / "outputs/pruned/model.pt"
    original = model.read_bytes()
    middle = len(original) // 2
    model.write_bytes(original[:middle] + bytes([original[middle] ^ 1]) + original[middle + 1 :])
    summary, shown = run_pipeline_showing(root, env, "--quiet")
    assert shown.strip().splitlines() == [
        "warning: outputs/pruned/model.pt differs from the hash dvc.lock records (tampered with, or edited by hand): "
        "restoring it from DVC's cache"
    ]
    assert summary["ran"] == []  # nothing was built on it, nor rebuilt without a word
    assert model.read_bytes() == original
    assert dvc_status(root, env) == {}


def test_second_run_while_one_holds_the_lock_is_refused(ws):
    from flows.locking import workspace_lock

    root, env = ws
    with workspace_lock(root / ".modhifi-run.lock"):
        result = modhifi(root, env, "run", "--workspace", str(root))
    assert result.returncode == 2
    assert "another modhifi run" in result.stderr


def test_killed_stage_leaves_previous_artifacts_and_next_run_completes(ws):
    root, env = ws
    model = root / "outputs/pruned/model.pt"
    before = model.read_bytes()
    params = _params(root)
    params["prune"]["target_flops"] = 0.6
    write_params(root, params)
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "stage", "prune", "--workspace", str(root)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.returncode != 0:  # killed: the checkpoint is whole (old, or new if the kill came after
        # its atomic replace), no temp file left; DVC re-runs the stage either way
        assert model.read_bytes() == before or zipfile.ZipFile(model).testzip() is None
        assert not list(model.parent.glob(".*.tmp"))
    summary = run_pipeline(root, env)
    assert "prune" in summary["ran"]
    assert summary["metrics"]["flops_ratio"] == pytest.approx(0.6, abs=0.02)
    assert dvc_status(root, env) == {}


def test_bad_input_inside_a_stage_is_one_line_and_exit_2(ws):
    """A value the schema cannot judge alone (a class the model lacks) fails in its stage."""
    root, env = ws
    lock_before = (root / "dvc.lock").read_text()
    params = _params(root)
    original = params["unlearn"]["forget_class"]
    params["unlearn"]["forget_class"] = 12
    write_params(root, params)
    try:
        result = modhifi(root, env, "run", "--workspace", str(root))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr[-2000:]
        assert lines[-1] == "error: stage unlearn failed (exit 2): forget class 12 does not exist: " + (
            "the model has classes 0..9"
        )
        assert (root / "dvc.lock").read_text() == lock_before
        assert (root / "outputs/unlearned/model.pt").is_file()  # the previous artifact is back in place
    finally:
        params["unlearn"]["forget_class"] = original
        write_params(root, params)
    assert dvc_status(root, env) == {}


def test_invalid_params_runs_nothing(ws):
    root, env = ws
    lock_before = (root / "dvc.lock").read_text()
    params = _params(root)
    params["prune"]["target_flops"] = 2.0
    write_params(root, params)
    result = modhifi(root, env, "run", "--workspace", str(root))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "prune.target_flops" in lines[0]
    assert (root / "dvc.lock").read_text() == lock_before
    assert json.loads((root / "outputs/evaluation/metrics.json").read_text())


def test_a_params_file_without_a_key_a_stage_reads_is_one_line(ws):
    """A params.yaml without a key a stage declares (here model.width, which train_base
    reads): refused before anything runs, naming the key, not DVC's error."""
    root, env = ws
    lock_before = (root / "dvc.lock").read_text()
    params = tiny_params()
    del params["model"]["width"]
    write_params(root, params)
    try:
        result = modhifi(root, env, "run", "--workspace", str(root))
    finally:
        write_params(root, tiny_params())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "params.yaml has no model.width (stage train_base reads it)" in lines[0]
    assert (root / "dvc.lock").read_text() == lock_before
