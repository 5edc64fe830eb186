"""The zoo lane: torchvision/timm adapters, run only in the venv `scripts/zoo_venv.sh`
builds (torch 2.14.1 + torchvision 0.29.1 + timm). Elsewhere every test here is skipped
with the reason, so the default suite stays on the main venv's torch 2.13.0.

    scripts/zoo_venv.sh && .venv/zoo/bin/python -m pytest -q tests/zoo
"""

from __future__ import annotations

import importlib

import pytest


def _zoo_missing() -> str | None:
    for name in ("torchvision", "timm", "safetensors"):
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or torchvision's operator error beside torch 2.13
            return f"zoo lane: {name} unavailable here ({type(exc).__name__}); run scripts/zoo_venv.sh"
    return None


def pytest_collection_modifyitems(config, items) -> None:
    reason = _zoo_missing()
    for item in items:
        if "tests/zoo/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.zoo)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
