"""collect on a Hugging Face language model: FFN statistics on the calibration windows."""

from __future__ import annotations

from kinds.language import LanguageKind
from kinds.language.synthesize import load_windows
from kinds.language.train_base import load_base
from modhifi_core.pruning.ffn import FFNStatistics, collect_ffn_statistics
from modhifi_core.safe_io import atomic_torch_save
from modhifi_core.sharding import worker_count
from tasks.cluster import open_executor
from tasks.records import read_record
from tasks.workspace import Workspace


def run(ws: Workspace, params: object, kind: LanguageKind) -> dict:
    """Each FFN block's streaming statistics of its down-projection input on the windows, on
    the Dask cluster of `cluster.address` when one is set (the same sums)."""
    loaded = load_base(ws, kind)
    with open_executor(params.cluster.address, params.cluster.workers) as executor:
        windows, batch = load_windows(ws), params.language.batch_size
        stats = collect_ffn_statistics(loaded.model, windows, batch_size=batch, executor=executor)
        workers = worker_count(executor) if executor is not None else 1
    blocks = {name: {"gram": s.gram, "total": s.total, "tokens": s.tokens} for name, s in stats.items()}
    atomic_torch_save(ws.artifact("statistics"), {"record": "ffn-statistics", "blocks": blocks})
    return {"layers": len(stats), "tokens": next(iter(stats.values())).tokens, "workers": workers}


def load_statistics(ws: Workspace) -> dict:
    """The collect stage's statistics per FFN block (weights_only)."""
    blocks = read_record(ws.artifact("statistics"))["blocks"]
    return {name: FFNStatistics(b["gram"], b["total"], int(b["tokens"])) for name, b in blocks.items()}
