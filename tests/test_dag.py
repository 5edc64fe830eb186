"""dvc.yaml is the one description of the DAG: the flow, the stage runner and the
workspace's artifact paths all agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kinds import REGISTRY, kind_class
from kinds.base import STAGES
from modhifi_core.errors import InputError
from tasks.dag import import_closure, read_stages, render_dvc_yaml, topological_order, upstream_closure
from tasks.inputs import INPUTS
from tasks.workspace import ARTIFACTS

REPO = Path(__file__).resolve().parent.parent


KINDS = sorted(REGISTRY)


def rendered(name: str) -> dict[str, object]:
    """The stages of kind `name`'s generated dvc.yaml (written to a tmp copy of the repo's layout)."""
    kind = kind_class(name)(None)
    return yaml.safe_load(render_dvc_yaml(kind, REPO))


@pytest.fixture(scope="module")
def stages():
    """The repository's dvc.yaml: the zoo kind's (what `make run` runs)."""
    return read_stages(REPO / "dvc.yaml")


def test_the_repository_dvc_yaml_is_the_zoo_kinds_as_generated():
    assert (REPO / "dvc.yaml").read_text() == render_dvc_yaml(kind_class("zoo")(None), REPO)


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_renders_a_dvc_yaml_of_its_own_stages(name, tmp_path):
    kind = kind_class(name)(None)
    (tmp_path / "dvc.yaml").write_text(render_dvc_yaml(kind, REPO))
    stages = read_stages(tmp_path / "dvc.yaml")
    assert list(stages) == list(kind.stages)
    assert not set(stages) & set(kind.skipped), "a stage that does not apply is not in the kind's pipeline"
    assert set(kind.stages) | set(kind.skipped) == set(STAGES)
    for stage_name, stage in stages.items():
        assert stage.cmd == f"modhifi stage {stage_name}"
        assert set(stage.outs) <= set(ARTIFACTS.values())
        closure = import_closure(REPO, f"{kind.package}.{stage_name}")
        missing = sorted(path for path in closure if not _covered(path, stage.deps))
        assert not missing, f"{name}: stage {stage_name} imports {missing} but its dvc.yaml does not list them"
        for dep in stage.deps:
            if not dep.startswith(("outputs/", "inputs/")):
                assert (REPO / dep).exists(), f"{name}: {stage_name} depends on missing {dep}"
    assert topological_order(stages)[-1] == "report"


OWN_FOLDERS = {
    "zoo": ("kinds/zoo",),
    "causal-lm": ("kinds/language",),
    "encoder": ("kinds/language",),
    "image-classification": ("kinds/image",),
    "torchvision": ("kinds/image",),
    "python": ("kinds/image", "kinds/python_module"),  # a user's module runs the image-classifier stages
}


@pytest.mark.parametrize("name", KINDS)
def test_a_kinds_stages_depend_on_no_other_kinds_code(name):
    """Editing one kind's adapter re-runs no stage of another kind (the registry imports
    adapters lazily, so a stage's import closure holds only its own kind's code)."""
    assert set(OWN_FOLDERS) == set(REGISTRY)
    shared = ("kinds/__init__.py", "kinds/base.py")
    for stage in rendered(name)["stages"].values():
        kinds_deps = [d for d in stage["deps"] if d.startswith("kinds/") and d not in shared]
        foreign = [d for d in kinds_deps if not any(_covered(d, (own,)) for own in OWN_FOLDERS[name])]
        assert not foreign, f"a {name} stage depends on {foreign}"


def test_the_vit_pruner_is_no_dependency_of_a_zoo_run():
    zoo = rendered("zoo")["stages"]
    assert not any(_covered("modhifi_core/vision/mlp.py", tuple(s["deps"])) for s in zoo.values())
    image = rendered("image-classification")["stages"]
    assert _covered("modhifi_core/vision/mlp.py", tuple(image["prune"]["deps"]))


def test_outs_are_the_workspace_artifacts(stages):
    outs = {out for stage in stages.values() for out in stage.outs}
    assert outs <= set(ARTIFACTS.values())


def test_external_inputs_are_deps_of_the_stages_that_read_them():
    """The hashes `modhifi run` writes of the model folder and the texts (tasks.inputs):
    the stages reading them re-run when they change."""
    lm = rendered("causal-lm")["stages"]
    assert INPUTS["model_source"] in lm["train_base"]["deps"]
    assert INPUTS["calibration_text"] in lm["synthesize"]["deps"]
    assert INPUTS["eval_text"] in lm["evaluate"]["deps"]
    zoo = rendered("zoo")["stages"]
    assert not any(d.startswith("inputs/") for s in zoo.values() for d in s["deps"])


def test_order_and_closures(stages):
    order = topological_order(stages)
    assert order[0] == "train_base" and order[-1] == "report"
    for name in order:
        for up in stages[name].upstream:
            assert order.index(up) < order.index(name)
    # collect -> score -> prune is a chain: prune's first round ranks by the score stage's scores
    assert upstream_closure(stages, {"prune"}) == {"train_base", "synthesize", "collect", "score", "prune"}
    assert {"outputs/statistics/statistics.pt", "outputs/scores/scores.pt"} <= set(stages["prune"].deps)


def test_params_are_granular(stages):
    """A change in unlearn.* must not invalidate prune (and so on down the chain)."""
    for name in ("train_base", "synthesize", "collect", "score", "prune"):
        assert not any(p.startswith("unlearn") for p in stages[name].params)
    assert not any(p.startswith("prune") for p in stages["unlearn"].params)


def test_cycle_is_refused(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: x\n    deps: [b.out]\n    outs: [a.out]\n"
        "  b:\n    cmd: y\n    deps: [a.out]\n    outs: [b.out]\n"
    )
    with pytest.raises(InputError, match="cycle"):
        topological_order(read_stages(tmp_path / "dvc.yaml"))


def _covered(path: str, deps: tuple[str, ...]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_fidelity_code_is_a_dependency_of_score_and_prune(stages):
    running = {name for name, stage in stages.items() if _covered("modhifi_core/fidelity.py", stage.deps)}
    assert {"score", "prune"} <= running


def test_import_closure_follows_function_level_imports(tmp_path):
    package = tmp_path / "tasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from tasks.b import g\n    return g\n")
    (package / "b.py").write_text("from . import c\n")
    (package / "c.py").write_text("import os\n")
    assert import_closure(tmp_path, "tasks.a") == {"tasks/__init__.py", "tasks/a.py", "tasks/b.py", "tasks/c.py"}


def test_a_stage_reading_an_undeclared_params_key_is_refused():
    from tasks.params import Params
    from tasks.runner import DeclaredParams

    view = DeclaredParams(Params.every_default(), ("seed", "prune.target_flops", "unlearn"), "prune")
    assert view.seed == 0 and view.prune.target_flops == 0.5 and view.unlearn.forget_class == 3
    with pytest.raises(InputError, match="stage prune reads params key 'prune.method'"):
        _ = view.prune.method
    with pytest.raises(InputError, match="'collect'"):
        _ = view.collect
