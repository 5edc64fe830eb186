"""What `modhifi run` shows while a stage runs: the stage process's output split into lines
the way a terminal shows it (tqdm's carriage returns redraw one line), streamed while the
process runs, and rendered by `RunView` (in place on a terminal, throttled in a log)."""

from __future__ import annotations

import io
import subprocess
import sys
import time

from flows.console import RunView
from flows.dvc import OutputSplitter, _last_line, bookkeeping, run_streaming


def _split(pieces):
    events = []
    splitter = OutputSplitter(lambda text, complete: events.append((text, complete)))
    for piece in pieces:
        splitter.feed(piece)
    splitter.close()
    return splitter.lines, events


def test_carriage_returns_redraw_one_line_and_only_newlines_end_lines():
    lines, events = _split(["start\n", "\rbar 10%", "\rbar 20%\rbar 30%", "\r      \r", "done\r\n", "tail"])
    assert lines == ["start", "done", "tail"]
    assert events == [
        ("start", True),
        ("bar 10%", False),
        ("bar 30%", False),  # what the terminal shows after the piece, not every intermediate state
        ("", False),  # tqdm(leave=False) blanks its bar
        ("done", True),
        ("tail", True),  # an unfinished last line still counts, but is not a bar (no \r) to redraw
    ]


def test_a_piece_boundary_inside_crlf_or_a_bar_changes_nothing():
    whole = "a\r\nb 1\rb 2\r\nc\n"
    assert _split([whole])[0] == _split(list(whole))[0] == ["a", "b 2", "c"]


def test_a_long_run_of_bar_updates_is_not_kept():
    splitter = OutputSplitter()
    for step in range(10_000):
        splitter.feed(f"\rsynthesize: {step}/10000")
    assert len(splitter._pending) < 40 and splitter.lines == []


def test_output_streams_while_the_process_runs_and_the_tail_is_kept():
    """The first line arrives before the process ends (it sleeps after printing it)."""
    code = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "sys.stderr.write('\\rstep 1/2'); sys.stderr.flush()\n"
        "time.sleep(1.5)\n"
        "sys.stderr.write('\\rstep 2/2\\n')\n"
        "print('error: the one line that says why')\n"
        "sys.exit(2)\n"
    )
    arrivals = []
    start = time.monotonic()

    def arrived(text, complete):
        arrivals.append((text, complete, time.monotonic()))

    result = run_streaming([sys.executable, "-c", code], ".", {}, arrived)
    first = next(t for text, complete, t in arrivals if text == "first")
    assert first - start < time.monotonic() - start - 1.0  # seen at least a second before the end
    assert ("step 1/2", False) in [(text, complete) for text, complete, _ in arrivals]
    assert result.returncode == 2
    assert result.stdout.splitlines() == ["first", "step 2/2", "error: the one line that says why"]
    assert _last_line(result) == "error: the one line that says why"


def test_last_line_finds_the_error_after_an_unfinished_bar():
    text = "Running stage 'prune':\ntrain:  67%|###   | 2/3 [00:03<00:01]ERROR: failed to reproduce 'prune'\n"
    assert _last_line(subprocess.CompletedProcess([], 1, text, "")) == "ERROR: failed to reproduce 'prune'"


def test_last_line_without_an_error_line_is_the_last_thing_the_stage_said():
    text = "Running stage 'prune':\n> modhifi stage prune\nTraceback ...\nValueError: boom\n"
    assert _last_line(subprocess.CompletedProcess([], 1, text, "")) == "ValueError: boom"


def test_dvc_bookkeeping_is_recognised_and_stage_output_is_not():
    dvc_says = ("Running stage 'prune':", "> modhifi stage prune", "Generating lock file 'dvc.lock'")
    for line in (*dvc_says, '{"seconds": 1}'):
        assert bookkeeping(line), line
    for line in ("WARNING: channel groups left untouched", "error: forget class 12 does not exist"):
        assert not bookkeeping(line), line


def _view(**kwargs):
    stream = io.StringIO()
    view = RunView(stream, **kwargs)
    view.plan(["train_base", "prune"])
    return view, stream


def test_view_prints_start_and_end_of_each_stage_and_indents_its_lines():
    view, stream = _view(live=False)
    view.finished("train_base", "skipped")
    view.started("prune")
    view.output("warning: something", True)
    view.finished("prune", "ran", 12.34)
    assert stream.getvalue().splitlines() == [
        "[1/2] train_base skipped (unchanged)",
        "[2/2] prune started",
        "      warning: something",
        "[2/2] prune ran in 12.3 s",
    ]


def test_view_on_a_terminal_redraws_the_bar_in_place_and_clears_it():
    view, stream = _view(live=True)
    view.started("prune")
    view.output("prune: 50%", False)
    view.output("prune: 100%", False)
    view.finished("prune", "ran", 1.0)
    text = stream.getvalue()
    assert text.count("\n") == 2  # the bar never adds a line
    assert "\r\x1b[K      prune: 50%\r\x1b[K      prune: 100%\r\x1b[K[2/2] prune ran in 1.0 s\n" in text


def test_view_in_a_log_prints_the_bar_at_most_every_interval():
    now = [0.0]
    view, stream = _view(live=False, every=10.0, clock=lambda: now[0])
    view.started("prune")
    for step in range(30):
        now[0] = float(step)
        view.output(f"prune: {step}/30", False)
    shown = [line.strip() for line in stream.getvalue().splitlines()[1:]]
    assert shown == ["prune: 0/30", "prune: 10/30", "prune: 20/30"]


def test_quiet_view_prints_nothing():
    view, stream = _view(enabled=False, live=True)
    view.note("3 of 9 stages changed")
    view.started("prune")
    view.output("prune: 50%", False)
    view.finished("prune", "ran", 1.0)
    view.failed("prune", 1.0, "exit 1")
    assert stream.getvalue() == ""
