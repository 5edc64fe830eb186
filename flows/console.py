"""How commands print results (a readable table, or one JSON object on the last line) and
how `modhifi run` shows a run while it happens (`RunView`)."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

console = Console(stderr=False)


def emit(result: dict[str, Any], as_json: bool, title: str) -> None:
    """Print `result` as one JSON line (`--json`) or as a two-column table."""
    if as_json:
        sys.stdout.write(json.dumps(_jsonable(result), sort_keys=True) + "\n")
        sys.stdout.flush()
        return
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, format_value(value))
    console.print(table)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _jsonable(value: Any) -> Any:
    """NaN/inf become null so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class RunView:
    """What `modhifi run` shows while it runs, on `stream` (stderr: stdout keeps only the
    result, so `--json` still ends with its one JSON line).

    One line when a stage starts and one when it ends (`ran in 12.3 s`, `unchanged` when
    DVC found its outputs already current, `skipped (unchanged)` when it did not need to
    run); between them the stage's own output lines, indented. A progress bar's updates
    (`output(text, complete=False)`) redraw in place on a terminal (`live`); elsewhere (a
    log file, CI) the bar's state is printed as a line at most every `every` seconds.
    `enabled=False` (`--quiet`) prints nothing.
    """

    INDENT = "      "

    def __init__(
        self,
        stream: TextIO | None = None,
        enabled: bool = True,
        live: bool | None = None,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = _is_terminal(self.stream) if live is None else live
        self.every, self.clock = every, clock
        self._bar_drawn = False
        self._last_bar_print = -math.inf
        self._position: dict[str, str] = {}

    def plan(self, order: list[str]) -> None:
        """The stages of this run, in order (they are shown numbered `[i/n]`)."""
        self._position = {name: f"[{i}/{len(order)}]" for i, name in enumerate(order, 1)}

    def note(self, text: str) -> None:
        """A line about the run itself (what changed, the Prefect server)."""
        self._line(text)

    def warn(self, text: str) -> None:
        """A line the user must see even with --quiet (an output found damaged)."""
        self._clear_bar()
        self.stream.write(f"warning: {text}\n")
        self.stream.flush()

    def started(self, stage: str, attempt: int = 1) -> None:
        self._last_bar_print = -math.inf
        self._line(f"{self._tag(stage)} started" + (f" (attempt {attempt})" if attempt > 1 else ""))

    def output(self, text: str, complete: bool) -> None:
        """A stage's output: a complete line, or what its progress bar shows now ("" when cleared)."""
        if complete:
            if text.strip():
                self._line(self.INDENT + text.rstrip())
        elif self.live:
            self._draw_bar(text)
        elif text.strip() and self.clock() - self._last_bar_print >= self.every:
            self._last_bar_print = self.clock()
            self._line(self.INDENT + text.strip())

    def finished(self, stage: str, outcome: str, seconds: float | None = None) -> None:
        """`outcome`: ran, unchanged or skipped."""
        text = {"ran": "ran", "unchanged": "unchanged (outputs already current)", "skipped": "skipped (unchanged)"}
        timing = f" in {seconds:.1f} s" if seconds is not None else ""
        self._line(f"{self._tag(stage)} {text[outcome]}{timing}")

    def failed(self, stage: str, seconds: float, reason: str) -> None:
        """The stage failed (`reason`, e.g. `exit 2`); the error itself is the CLI's last line."""
        self._line(f"{self._tag(stage)} FAILED after {seconds:.1f} s ({reason})")

    def _tag(self, stage: str) -> str:
        return f"{self._position.get(stage, '')} {stage}".strip()

    def _line(self, text: str) -> None:
        if not self.enabled:
            return
        self._clear_bar()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _draw_bar(self, text: str) -> None:
        if not self.enabled:
            return
        if not text.strip():
            self._clear_bar()
            return
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r\x1b[K" + (self.INDENT + text.strip())[:width])
        self.stream.flush()
        self._bar_drawn = True

    def _clear_bar(self) -> None:
        if self._bar_drawn:
            self.stream.write("\r\x1b[K")
            self._bar_drawn = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
