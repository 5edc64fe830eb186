"""The pipeline on a Hugging Face image classifier (`model.source: hf:DIR`): the whole
chain (source recorded → samples synthesised from the model → collect/score skipped →
prune_image_classifier → unlearn_image_classifier → finetune skipped → accuracy and
UA/RA/TA/MIA on digits → report) on a tiny HF ResNet trained here on digits, through
`modhifi run --json`; and params that cannot run on the model refused at run start in one line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

pytest.importorskip("transformers", reason="the HF image pipeline needs transformers")

from pipeline_workspace import (  # noqa: E402
    REPO,
    image_params,
    isolated_env,
    make_workspace,
    modhifi,
    refused_at_start,
    run_pipeline,
    write_params,
)
from vision_models import trained_resnet, trained_vit  # noqa: E402

from kinds import kind_of  # noqa: E402
from kinds.image import COLLECT_REASON, FINETUNE_REASON  # noqa: E402
from modhifi_core.errors import InputError  # noqa: E402
from modhifi_core.safe_io import sha256_file  # noqa: E402
from modhifi_core.training import accuracy  # noqa: E402
from modhifi_core.vision import LogitsOnly, load_hf_pruned  # noqa: E402
from tasks.params import validate_params  # noqa: E402

ALL = ["train_base", "synthesize", "prune", "unlearn", "evaluate", "report"]  # the image kind's pipeline


@pytest.fixture(scope="module")
def resnet_folder(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("vision-pipeline") / "resnet"
    trained_resnet(digits).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, resnet_folder):
    """One `modhifi run` of the whole chain on the tiny ResNet (data-free: synthetic calibration)."""
    base = tmp_path_factory.mktemp("vision-run")
    root = make_workspace(base / "ws", kind_of(f"hf:{resnet_folder}"))
    write_params(root, image_params(resnet_folder, forget_class=3))
    env = isolated_env(base / "home")
    return root, env, run_pipeline(root, env)


def test_image_params_hold_only_the_image_sections(resnet_folder, tmp_path):
    from tasks.params import check_sections

    raw = image_params(resnet_folder)
    check_sections(raw, "params.yaml", tmp_path)
    assert validate_params(raw).model.source == f"hf:{resnet_folder}"
    with pytest.raises(InputError, match="section 'language' is not read by a image-classification model"):
        check_sections({**raw, "language": {}}, "params.yaml", tmp_path)


def test_cluster_address_for_an_image_classifier_is_one_line(resnet_folder, tmp_path):
    raw = image_params(resnet_folder)
    raw["cluster"]["address"] = "local"
    params = validate_params(raw)
    with pytest.raises(InputError, match="cluster.address: an image classifier's prune collects"):
        kind_of(params.model.source).check_run(params, tmp_path)


def test_image_pipeline_end_to_end(image_run, resnet_folder):
    root, _, summary = image_run
    assert sorted(summary["ran"]) == sorted(ALL)
    m = summary["metrics"]
    assert m["base_test_accuracy"] > 90 and m["pruned_test_accuracy"] > 70, "data-free pruning keeps the model"
    assert m["flops_ratio"] == pytest.approx(0.5, abs=0.03) and m["params_ratio"] < 0.8
    assert m["forget_class"] == 3 and m["UA"] > 90 and m["RA"] > 60 and m["TA"] > 60  # UA: error on the forget set
    assert {"MIA", "UA_after_bn_recalibration", "UA_after_relearning", "unlearned_test_accuracy"} <= set(m)
    assert {"probe_forget_accuracy", "original_probe_forget_accuracy", "forgetting_lives_in"} <= set(m)
    reasons = summary["skipped_reasons"]
    assert reasons == {"collect": COLLECT_REASON, "score": COLLECT_REASON, "finetune": FINETUNE_REASON}

    assert summary["lineage"] == "outputs/pruned/hf/modhifi.json"
    pruned = json.loads((root / summary["lineage"]).read_text())
    assert pruned["operation"] == "prune" and pruned["params"]["prune"]["target_flops"] == 0.5
    assert pruned["parents"]["base_model"] == sha256_file(root / "outputs/base/model.pt")
    assert pruned["parents"]["source_files"]["model.safetensors"] == sha256_file(resnet_folder / "model.safetensors")
    assert pruned["parents"]["synthetic"]  # data-free: the synthesize stage's samples
    unlearned = json.loads((root / "outputs/unlearned/hf/modhifi.json").read_text())
    assert unlearned["operation"] == "unlearn" and unlearned["params"]["unlearn"]["forget_class"] == 3
    assert unlearned["parents"]["pruned_model"] == sha256_file(root / "outputs/pruned/model.pt")

    report = (root / "outputs/report/report.md").read_text()
    assert "## Image classifier" in report and f"finetune: skipped: {FINETUNE_REASON}" in report
    assert f"collect, score: skipped: {COLLECT_REASON}" in report
    assert "UA, forgetting class 3" in report
    assert "feature probe" in report and "a linear probe on the penultimate features" in report


def test_image_pipeline_outputs_reload_and_measure_the_same(image_run, digits):
    root, _, summary = image_run
    for name in ("pruned", "unlearned"):
        model = LogitsOnly(load_hf_pruned(root / f"outputs/{name}/hf")).eval()
        assert accuracy(model, digits.test) == pytest.approx(summary["metrics"][f"{name}_test_accuracy"], abs=1e-6)


def test_lineage_walks_the_unlearned_folder_back_through_the_pruned_one(image_run, resnet_folder):
    root, env, _ = image_run
    result = modhifi(root, env, "lineage", "outputs/unlearned/hf", "--verify", "--format", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["verified"] is True
    links = {(link["role"], Path(link["parent"]).resolve()) for link in record["chain"]}
    assert ("pruned_model", (root / "outputs/pruned/model.pt").resolve()) in links
    assert ("base_model", (root / "outputs/base/model.pt").resolve()) in links


def test_image_pipeline_tracks_accuracy_and_forgetting_in_mlflow(image_run):
    root = image_run[0]
    with sqlite3.connect(root / "mlflow.db") as db:
        rows = dict(db.execute("SELECT key, value FROM metrics").fetchall())
    evaluation = json.loads((root / "outputs/evaluation/metrics.json").read_text())
    for key in ("base_test_accuracy", "pruned_test_accuracy", "unlearned_test_accuracy", "UA", "RA", "TA"):
        assert rows[key] == pytest.approx(evaluation[key])


@pytest.mark.parametrize(
    ("unlearn", "match"),
    [
        ({"forget_class": 10}, r"unlearn.forget_class: 10 is not a class of .*resnet \(it has 10: 0-9\)"),
        ({"forget_class": None, "forget_random": 0.1, "data": "real"}, "an image classifier forgets a class"),
    ],
)
def test_a_forget_set_the_model_cannot_have_is_one_line(resnet_folder, tmp_path, unlearn, match):
    params = validate_params(image_params(resnet_folder, **unlearn))
    with pytest.raises(InputError, match=match) as info:
        kind_of(params.model.source, tmp_path).check_run(params, tmp_path)
    assert "\n" not in str(info.value)


def test_modhifi_run_refuses_a_forget_class_out_of_range_before_any_stage(resnet_folder, tmp_path):
    root = make_workspace(tmp_path / "ws", kind_of(f"hf:{resnet_folder}"))
    write_params(root, image_params(resnet_folder, forget_class=10))
    assert "unlearn.forget_class: 10 is not a class of" in refused_at_start(root, isolated_env(tmp_path / "home"))


def test_example_hf_resnet_params_are_complete_and_valid(resnet_folder):
    """examples/hf-resnet/params.yaml holds exactly what an image classifier reads and validates."""
    from tasks.params import check_sections

    raw = yaml.safe_load((REPO / "examples/hf-resnet/params.yaml").read_text())
    assert set(raw) - {"cluster", "schedule"} == {"seed", "model", *kind_of("torchvision:x").sections}
    assert raw["model"]["source"] == "hf:examples/hf-resnet/model"
    raw["model"]["source"] = f"hf:{resnet_folder}"
    check_sections(raw, "examples/hf-resnet/params.yaml", REPO)
    assert validate_params(raw).unlearn.forget_class == 3


@pytest.mark.slow
def test_vit_pipeline_prunes_mlp_neurons_and_unlearns_without_batchnorm(tmp_path, digits):
    """A LayerNorm ViT: samples from class cross-entropy + image priors (no BN statistics),
    MLP neurons pruned, ModHiFi-U negating the residual-stream MLPs; the output loads with
    stock transformers (every block the same width: `intermediate_size` describes it)."""
    from transformers import AutoModelForImageClassification

    trained_vit(digits).save_pretrained(tmp_path / "vit")
    root = make_workspace(tmp_path / "ws", kind_of(f"hf:{tmp_path / 'vit'}"))
    params = image_params(tmp_path / "vit", forget_class=3)
    params["prune"]["target_flops"] = 0.8
    write_params(root, params)
    m = run_pipeline(root, isolated_env(tmp_path / "home"))["metrics"]
    assert m["components"] == "mlp" and m["flops_ratio"] <= 0.8 + 0.03
    assert m["base_test_accuracy"] > 80 and m["pruned_test_accuracy"] > 50 and {"UA", "RA", "TA", "MIA"} <= set(m)
    stock = AutoModelForImageClassification.from_pretrained(root / "outputs/pruned/hf", local_files_only=True)
    assert accuracy(LogitsOnly(stock).eval(), digits.test) == pytest.approx(m["pruned_test_accuracy"], abs=1e-6)


def test_modhifi_run_refuses_a_torchvision_source_where_torchvision_does_not_import(tmp_path):
    """The main venv has no torchvision (toolchain.md): a torchvision:ARCH run stops at run
    start, in one line that says where it runs (the zoo lane tests the run itself)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or torchvision's operator error beside torch 2.13
        pass
    else:
        pytest.skip("torchvision imports here: the zoo lane (tests/zoo) runs this source")
    root = make_workspace(tmp_path / "ws", kind_of("torchvision:resnet18"))
    (tmp_path / "resnet18.safetensors").write_bytes(b"")
    params = image_params(tmp_path)
    params["model"].update(source="torchvision:resnet18", weights=str(tmp_path / "resnet18.safetensors"))
    write_params(root, params)
    last = refused_at_start(root, isolated_env(tmp_path / "home"))
    assert "torchvision does not import in this venv" in last and "run in the zoo venv" in last
