"""Writing a run's rendered report (figures, report.md, report.html) into the report
artifact, and reading the metrics it renders; every kind's report stage uses these."""

from __future__ import annotations

import json
from pathlib import Path

from modhifi_core.safe_io import atomic_write_bytes, atomic_write_text
from tasks.workspace import Workspace


def write_report(ws: Workspace, rendered: object) -> dict:
    """The figures, report.md and report.html into the report folder."""
    out = ws.artifact("report")
    for name, png in rendered.figures.items():
        atomic_write_bytes(out / name, png)
    atomic_write_text(out / "report.md", rendered.markdown)
    atomic_write_text(out / "report.html", rendered.html)
    return {"figures": len(rendered.figures)}


def read_json(path: Path) -> dict:
    """A metrics artifact."""
    return json.loads(path.read_text())
