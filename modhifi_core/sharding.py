"""Run a per-batch pass over calibration data as a few tasks on an executor.

Statistics over calibration batches are sums, so a pass over `B` batches can be cut into
`S` contiguous shards, each shard's sums computed by one task, and the results added.
`map_shards` does the cutting and the submitting for any `concurrent.futures.Executor`
(a thread or process pool, or the orchestration layer's Dask `Client.get_executor()`):
the engine never imports Dask.

What travels: the model once per task, pickled once on the caller's side (so the cost
of serialising it does not grow with the number of shards), and each shard's images as
one contiguous tensor with its batch sizes (a `Tensor.split` view would otherwise pickle
the whole calibration set's storage). Each task unpickles its own copy of the model, so
tasks sharing a process (a thread pool, a multi-threaded Dask worker) never share forward
hooks. A task rebuilds exactly the caller's batches, so every per-batch product is the
one the single-process pass computes; only the order of the float64 additions differs.

Retries are the executor's business (Dask: `client.get_executor(retries=N)`, and a
killed worker's tasks are rescheduled by the scheduler). An `InputError` raised in a task
(bad data is bad on every worker) is returned as a value, not raised there, so that no
executor retries it; the caller re-raises it.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modhifi_core.errors import InputError


@dataclass
class Shard:
    """Contiguous calibration batches packed for transport: `images (sum(sizes), ...)`,
    split back into batches of `sizes` by `batches()`."""

    images: Tensor
    sizes: list[int]

    def batches(self) -> list[Tensor]:
        return list(self.images.split(self.sizes))

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()


def worker_count(executor: Executor) -> int:
    """How many tasks `executor` runs at once: the `_max_workers` that the standard pools
    (and modhifi's Dask executor) expose, else the number of CPUs."""
    count = getattr(executor, "_max_workers", None)
    return max(1, int(count)) if count else max(1, os.cpu_count() or 1)


def split_shards(batches: Iterable[Tensor | tuple | list], shards: int) -> list[Shard]:
    """Cut `batches` (image tensors or `(images, labels)` pairs; empty ones dropped) into at
    most `shards` contiguous groups whose batch counts differ by at most one. Raises
    `InputError` for `shards < 1`, NaN/inf images, or no images at all."""
    if shards < 1:
        raise InputError(f"shards must be at least 1, got {shards}")
    images = [batch[0] if isinstance(batch, (tuple, list)) else batch for batch in batches]
    images = [batch for batch in images if len(batch) > 0]
    if not images:
        raise InputError("calibration data is empty: no images to collect statistics on")
    if not all(torch.isfinite(batch).all() for batch in images):
        raise InputError("calibration images contain NaN or inf")
    count = min(shards, len(images))
    base, extra = divmod(len(images), count)
    groups, start = [], 0
    for index in range(count):
        stop = start + base + (index < extra)
        group = images[start:stop]
        groups.append(Shard(torch.cat(group), [len(batch) for batch in group]))
        start = stop
    return groups


def map_shards(
    executor: Executor,
    work: Callable,
    model: nn.Module,
    batches: Iterable[Tensor | tuple | list],
    args: Sequence = (),
    shards: int | None = None,
) -> list:
    """`[work(model_copy, shard_batches, *args) for each shard]`, the calls run on `executor`.

    `work` must be importable by the executor's workers (a module-level function such as
    `collect_statistics`). `shards` defaults to two per worker (`worker_count`), so a slow
    or lost worker holds up half as much. Results come back in shard order."""
    shards = 2 * worker_count(executor) if shards is None else shards
    packed = split_shards(batches, shards)
    model_bytes = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    futures = [executor.submit(run_shard, work, model_bytes, shard, tuple(args)) for shard in packed]
    try:
        results = [future.result() for future in futures]
    finally:
        for future in futures:  # after a failure, stop the shards that have not started
            future.cancel()
    for result in results:
        if isinstance(result, InputError):
            raise result
    return results


def run_shard(work: Callable, model_bytes: bytes, shard: Shard, args: tuple) -> object:
    """The task body: unpickle a private copy of the model and run `work` on the shard's
    batches. An `InputError` is returned (see the module docstring), anything else raises."""
    model = pickle.loads(model_bytes)
    try:
        return work(model, shard.batches(), *args)
    except InputError as error:
        return error
