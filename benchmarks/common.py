"""What every benchmark shares: its command line's common options, the results folder,
writing a result file, mean ± sample std, and a printed table.

Nothing here imports torch at import time (benchmarks/scale.py measures its processes).
The benchmarks run as scripts (`python benchmarks/<name>.py`), so they import this module
as `common`, the way `benchmarks/unlearn.py` imports `prune`.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent


def parser(doc: str, out_help: str | None, threads: bool = True) -> argparse.ArgumentParser:
    """The benchmark's parser: its docstring (usage lines kept) as the description, `--out`
    (a path, default None: the benchmark's file under results/) unless `out_help` is None,
    and, unless `threads` is False, `--threads` (torch threads, default 1: on a shared
    machine a second thread mostly adds contention)."""
    made = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if out_help is not None:
        made.add_argument("--out", type=Path, default=None, help=out_help)
    if threads:
        made.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return made


def parse(made: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed arguments; torch runs with `--threads` threads where the benchmark has it."""
    args = made.parse_args(argv)
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)
    return args


def result_path(out: Path | None, name: str) -> Path:
    """Where a result goes: `--out` when given, else results/<name>."""
    return out if out is not None else RESULTS / name


def write_result(path: Path, result: dict) -> Path:
    """The result as JSON (sorted keys, atomically: a run cut short never leaves half a file)."""
    from modhifi_core.safe_io import atomic_write_json  # imports torch: not at a benchmark's start

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, result)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def print_table(columns: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 2) -> None:
    """Rows under a header, each column as wide as its widest cell: numbers right-aligned
    (floats with `digits` decimals), text left-aligned."""

    def text(cell: object) -> str:
        return f"{cell:.{digits}f}" if isinstance(cell, float) else str(cell)

    cells = [[text(c) for c in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(columns))]

    def line(items: Sequence[str]) -> str:
        return "  ".join(s.rjust(w) if num else s.ljust(w) for s, w, num in zip(items, widths, numeric)).rstrip()

    print(line(columns))
    for row in cells:
        print(line(row))
