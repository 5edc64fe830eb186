"""dvc.yaml is the one description of the DAG: the flow, the stage runner and the
workspace's artifact paths all agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from modhifi_core.errors import InputError
from tasks.dag import import_closure, read_stages, topological_order, upstream_closure
from tasks.inputs import INPUTS
from tasks.runner import STAGE_MODULES
from tasks.workspace import ARTIFACTS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stages():
    return read_stages(REPO / "dvc.yaml")


def test_every_stage_has_a_module_and_calls_modhifi_stage(stages):
    assert set(stages) == set(STAGE_MODULES)
    for name, stage in stages.items():
        assert stage.cmd == f"modhifi stage {name}"
        assert f"tasks/{name}.py" in stage.deps


def test_outs_are_the_workspace_artifacts(stages):
    outs = {out for stage in stages.values() for out in stage.outs}
    assert outs == set(ARTIFACTS.values())


def test_code_deps_exist(stages):
    for stage in stages.values():
        for dep in stage.deps:
            if not dep.startswith("outputs/"):
                assert (REPO / dep).exists(), f"{stage.name} depends on missing {dep}"


def test_external_inputs_are_deps_of_the_stages_that_read_them(stages):
    """The hashes `modhifi run` writes of the model folder and the texts (tasks.inputs):
    the stages reading them re-run when they change. The repository holds the zoo run's
    (`{"path": null}`), so `dvc repro` works in a fresh checkout."""
    readers = {"model_source": "train_base", "calibration_text": "synthesize", "eval_text": "evaluate"}
    assert set(readers) == set(INPUTS)
    for name, stage in readers.items():
        assert INPUTS[name] in stages[stage].deps
    every = {dep for stage in stages.values() for dep in stage.deps if dep.startswith("inputs/")}
    assert every == set(INPUTS.values())


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


def test_every_stage_depends_on_all_the_code_it_imports(stages):
    """A stage's code deps cover its import closure, so dvc.lock names every source file
    that could have shaped its artifact (and a change to one re-runs the stage)."""
    for name, stage in stages.items():
        closure = import_closure(REPO, f"tasks.{name}")
        missing = sorted(path for path in closure if not _covered(path, stage.deps))
        assert not missing, f"stage {name} imports {missing} but dvc.yaml does not list them as deps"


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
    from modhifi_core.params import Params
    from tasks.runner import DeclaredParams

    view = DeclaredParams(Params(), ("seed", "prune.target_flops", "unlearn"), "prune")
    assert view.seed == 0 and view.prune.target_flops == 0.5 and view.unlearn.forget_class == 3
    with pytest.raises(InputError, match="stage prune reads params key 'prune.method'"):
        _ = view.prune.method
    with pytest.raises(InputError, match="'collect'"):
        _ = view.collect
