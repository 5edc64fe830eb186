"""How commands print results: a readable table, or one JSON object on the last line."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

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
