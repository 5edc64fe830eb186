"""`modhifi init DIR --model SOURCE` (issue 27): a workspace of its own anywhere, a git
repository with DVC, the params.yaml of the source's kind (its sections only, every
default with its comment), the kind's dvc.yaml whose code deps are modhifi's version and
code hash, and a .gitignore; `modhifi run` there runs the pipeline with the installed
modhifi and leaves the checkout untouched."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from llm_models import tiny, word_text, word_tokenizer
from pipeline_workspace import REPO, TINY, isolated_env, modhifi, run_pipeline

from flows.new_workspace import create_workspace
from kinds import kind_class, kind_of
from modhifi_core.errors import InputError
from tasks import dag
from tasks.dag import CODE_RECORD, code_records, read_stages
from tasks.params import Params, load_params

TINY_LANGUAGE = {"samples": 8, "length": 16, "eval_samples": 4, "latency_repeats": 1, "batch_size": 4}


def checkout_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny from-config Llama folder with a tokenizer, and held-out text."""
    root = tmp_path_factory.mktemp("source")
    tiny("llama").save_pretrained(root / "tiny-llama")
    word_tokenizer().save_pretrained(root / "tiny-llama")
    return root / "tiny-llama", word_text(root / "eval.txt", 200, 1)


def test_init_makes_a_workspace_of_the_sources_kind_outside_the_checkout(llama, tmp_path, monkeypatch):
    folder, text = llama
    monkeypatch.chdir(folder.parent)  # a relative source is read from here, not from the workspace
    before = checkout_status()
    root = create_workspace(tmp_path / "work", f"hf:{folder.name}", {"language.eval_text": str(text)})
    assert (root / ".git").is_dir() and (root / ".dvc").is_dir()
    assert "/mlflow.db" in (root / ".gitignore").read_text().splitlines()
    raw = yaml.safe_load((root / "params.yaml").read_text())
    assert list(raw) == ["seed", "model", "language", "compute", "cluster"], "only the causal LM's sections"
    assert raw["model"] == {"source": f"hf:{folder}"}, "the relative source made absolute"
    params = load_params(root / "params.yaml")
    defaults = Params.every_default()
    assert params.language.model_dump() == defaults.language.model_dump() | {"eval_text": str(text)}
    text_of = (root / "params.yaml").read_text()
    assert re.search(r"^  samples: 128 +# calibration sequences N$", text_of, re.M), "defaults carry their comments"
    kind = kind_of(params.model.source, root)
    for name, stage in read_stages(root / "dvc.yaml").items():
        code = [d for d in stage.deps if not d.startswith(("outputs/", "inputs/model", "inputs/calib", "inputs/eval"))]
        assert code == [CODE_RECORD.format(stage=name)], f"{name}: its code dep is one record, not checkout paths"
        assert json.loads((root / code[0]).read_text()) == code_records(kind)[name]
    assert checkout_status() == before


def test_init_on_the_default_writes_the_zoo_sections_with_their_defaults(tmp_path):
    root = create_workspace(tmp_path / "digits", None)
    zoo = kind_class("zoo")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    assert list(raw) == ["seed", "model", *zoo.sections, "cluster"]
    params = load_params(root / "params.yaml")
    assert params.data.dataset == "digits" and params.model.source is None
    assert params.prune.model_dump() == Params.every_default().prune.model_dump()


def test_a_code_change_moves_only_the_records_of_the_stages_that_import_it(tmp_path, monkeypatch):
    """Upgrading modhifi re-runs what changed: the record of a stage whose import closure
    holds the edited file changes, the others do not."""
    for package in dag.PROJECT_PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(dag, "CODE_ROOT", tmp_path)
    kind = kind_class("zoo")(None)
    before = code_records(kind)
    report = tmp_path / "kinds" / "zoo" / "report.py"
    report.write_text(report.read_text() + "\n# edited\n")
    after = code_records(kind)
    assert {name for name in before if before[name] != after[name]} == {"report"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nonsense"], "model source 'nonsense' is not one of"),
        (["--model", "hf:/no/such/folder"], "/no/such/folder"),
        (["--set", "prune.target_flops=2"], "target_flops"),
        (["--set", "language.length=16"], "language.length is not a params key of a zoo model"),
    ],
)
def test_a_bad_source_or_setting_is_refused_in_one_line_and_nothing_is_made(args, message, tmp_path):
    with pytest.raises(InputError, match=message) as refused:
        create_workspace(tmp_path / "work", *_split(args))
    assert "\n" not in str(refused.value) and not (tmp_path / "work").exists()


def _split(args: list[str]) -> tuple:
    from flows.new_workspace import parse_settings

    model = args[1] if args[0] == "--model" else None
    return model, parse_settings([args[1]] if args[0] == "--set" else [])


def test_a_non_empty_folder_is_refused_by_the_command_and_left_as_it_was(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mine.txt").write_text("keep")
    result = modhifi(tmp_path, isolated_env(tmp_path), "init", str(tmp_path / "work"))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "already exists and is not an empty folder" in result.stderr
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["mine.txt"]


def _init_and_run_twice(tmp_path: Path, *init_args: str) -> tuple[Path, dict, dict]:
    """`modhifi init` then `modhifi run` twice inside the new workspace, as a user would."""
    env = isolated_env(tmp_path / "home")
    before = checkout_status()
    made = modhifi(tmp_path, env, "init", "work", *init_args, "--json")
    assert made.returncode == 0, made.stderr[-2000:]
    root = Path(json.loads(made.stdout.splitlines()[-1])["workspace"])
    first, second = run_pipeline(root, env), run_pipeline(root, env)
    assert checkout_status() == before, "the run wrote nothing into the checkout"
    return root, first, second


@pytest.mark.slow
def test_init_then_run_on_a_tiny_hf_model_twice(llama, tmp_path):
    folder, text = llama
    settings = [f"--set=language.{k}={v}" for k, v in TINY_LANGUAGE.items()]
    root, first, second = _init_and_run_twice(
        tmp_path, "--model", f"hf:{folder}", f"--set=language.eval_text={text}", *settings
    )
    assert first["ran"] == list(kind_of(f"hf:{folder}").stages) and "perplexity" in first["metrics"]
    assert second["ran"] == [], "the second run is a no-op"
    lineage = modhifi(root, isolated_env(tmp_path / "home"), "lineage", "outputs/pruned/hf")
    assert lineage.returncode == 0 and "modhifi" in lineage.stdout, lineage.stderr[-2000:]


@pytest.mark.slow
def test_init_then_run_on_the_digits_default_twice(tmp_path):
    settings = [f"--set={section}.{k}={v}" for section, values in TINY.items() for k, v in values.items()]
    _, first, second = _init_and_run_twice(tmp_path, *settings)
    assert "final_TA" in first["metrics"] and len(first["ran"]) == len(kind_class("zoo").stages)
    assert second["ran"] == []
