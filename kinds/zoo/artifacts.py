"""Reading back what the zoo's collect and score stages wrote (weights_only)."""

from __future__ import annotations

import torch

from modhifi_core.operations.statistics import ModelScores, ModelStatistics
from tasks.workspace import Workspace


def load_statistics(ws: Workspace) -> ModelStatistics:
    """The collect stage's statistics."""
    return ModelStatistics.from_payload(torch.load(ws.artifact("statistics"), map_location="cpu", weights_only=True))


def load_scores(ws: Workspace) -> ModelScores:
    """The score stage's scores."""
    return ModelScores.from_payload(torch.load(ws.artifact("scores"), map_location="cpu", weights_only=True))
