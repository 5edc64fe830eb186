"""What every command that takes `--model` does first: load the checkpoint safely and the
real data its metadata names (optionally another dataset or data folder)."""

from __future__ import annotations

from pathlib import Path

from modhifi_core.checkpoint import Checkpoint, load_checkpoint
from modhifi_core.data import DatasetSplits, data_spec, load_from_spec
from modhifi_core.metadata import read_metadata


def load_model_and_data(
    path: Path, dataset: str | None = None, data_dir: Path | None = None
) -> tuple[Checkpoint, DatasetSplits]:
    """The checkpoint at `path` and its dataset (`dataset`/`data_dir` override the
    recorded ones; a checkpoint without a record gets digits at its input size)."""
    ckpt = load_checkpoint(path)
    spec = read_metadata(ckpt.metadata).data or data_spec(
        image_size=ckpt.config.image_size, channels=ckpt.config.in_channels
    )
    data = load_from_spec(spec, dataset=dataset, data_dir=str(data_dir) if data_dir else None)
    return ckpt, data
