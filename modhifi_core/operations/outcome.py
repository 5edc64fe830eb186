"""What an operation that makes a model returns: the model and everything saved with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from modhifi_core.checkpoint import save_checkpoint
from modhifi_core.metadata import ModelMetadata
from modhifi_core.models import ModelConfig


@dataclass
class Outcome:
    """A new model (the input models are untouched), its config (layers whose shapes
    changed are recorded on save), its metadata (the one schema, `modhifi_core.metadata`),
    `metrics` to print and log (timings included; they are stripped from the checkpoint)
    and `extra` tensors saved beside the weights (a sparse model's masks)."""

    model: nn.Module
    config: ModelConfig
    metadata: ModelMetadata
    metrics: dict[str, Any]
    extra: dict[str, Tensor] = field(default_factory=dict)

    def save(self, path: str | Path) -> str:
        """Write the checkpoint atomically; returns its sha256."""
        return save_checkpoint(path, self.model, self.config, self.metadata.to_dict(), self.extra or None)
