"""How a run finds and repairs outputs a killed or tampered run left (flows/dvc.py), on a
two-stage DVC project of shell commands (real DVC, seconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows import dvc

DVC_YAML = """\
stages:
  copy:
    cmd: cp a.txt out/b.txt
    deps: [a.txt]
    outs: [out/b.txt]
  folder:
    cmd: mkdir -p d && cp a.txt d/c.txt
    deps: [a.txt]
    outs: [d]
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site"))
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "a.txt").write_text("payload\n")
    (tmp_path / "out").mkdir()
    for args in (["init", "-q", "--no-scm"], ["repro", "-q"]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def test_status_names_deleted_and_modified_outputs(project):
    assert dvc.status(project) == dvc.Status(set(), {})
    (project / "out/b.txt").unlink()
    (project / "d/c.txt").write_text("forged\n")
    status = dvc.status(project)
    assert status.changed == {"copy", "folder"}
    assert status.damaged == {"copy": {"out/b.txt": "deleted"}, "folder": {"d": "modified"}}


def test_stages_that_never_ran_are_changed_not_damaged(tmp_path, monkeypatch):
    """Without dvc.lock DVC calls every output "deleted"; none of it is damage to report."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "site"))
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "a.txt").write_text("payload\n")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=tmp_path, check=True)
    assert dvc.status(tmp_path) == dvc.Status({"copy", "folder"}, {})


def test_restore_puts_back_the_locked_outputs_and_removes_partial_writes(project):
    (project / "out/b.txt").unlink()
    partial = project / "out/.b.txt.k3j2.tmp"
    partial.write_text("half")
    unrelated = project / "out/notes.txt"
    unrelated.write_text("mine")
    (project / "d/c.txt").write_text("forged\n")
    (project / "d/.c.txt.x1.tmp").write_text("half")
    (project / ".d.q9.tmp").mkdir()  # a folder written whole, then renamed into place
    (project / ".d.q9.tmp/c.txt").write_text("half")
    assert dvc.restore_outputs(project, {"copy": ("out/b.txt",), "folder": ("d",)}) == set()
    assert (project / "out/b.txt").read_text() == (project / "d/c.txt").read_text() == "payload\n"
    assert not partial.exists() and not (project / "d/.c.txt.x1.tmp").exists()
    assert not (project / ".d.q9.tmp").exists()
    assert unrelated.read_text() == "mine"  # not ours to remove
    assert dvc.status(project) == dvc.Status(set(), {})


def test_restore_reports_outputs_missing_from_the_cache(project):
    cache = project / ".dvc" / "cache"
    for path in cache.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
            path.unlink()
    (project / "out/b.txt").unlink()
    assert dvc.restore_outputs(project, {"copy": ("out/b.txt",)}) == {"copy"}


@pytest.mark.parametrize(
    ("said", "returncode", "expected"),
    [
        ("ERROR: failed to reproduce 'p': failed to run: modhifi stage p, exited with -9", 255, (-9, 9)),
        ("ERROR: failed to reproduce 'p': failed to run: modhifi stage p, exited with 137", 255, (137, 9)),
        ("ERROR: failed to reproduce 'p': failed to run: modhifi stage p, exited with 2", 255, (2, None)),
        ("ERROR: failed to reproduce 'p': failed to run: modhifi stage p, exited with 1", 255, (1, None)),
        ("", -9, (-9, 9)),  # DVC itself was killed
    ],
)
def test_stage_exit_tells_a_kill_from_a_failure(said, returncode, expected):
    result = subprocess.CompletedProcess([], returncode, said, "")
    assert dvc._stage_exit(result) == expected


def test_a_killed_stage_is_said_in_one_line_and_not_retried():
    from flows.pipeline import _retry_unless_bad_input

    killed = dvc.StageFailed("prune", -9, "", signal=9)
    assert str(killed) == (
        "stage prune was killed by SIGKILL (out of memory, or kill -9); its previous outputs are back in place"
    )

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    assert not _retry_unless_bad_input(None, None, State(killed))
    assert not _retry_unless_bad_input(None, None, State(dvc.StageFailed("prune", 2, "error: bad")))
    assert _retry_unless_bad_input(None, None, State(dvc.StageFailed("prune", 1, "boom")))
