"""Turn a `cluster` setting into the executor the engine's statistics passes take.

`address: null` → no executor (the engine's single-process path); `local` → a
`distributed.LocalCluster` of `workers` one-thread worker processes, started here and
closed on exit; `tcp://host:port` (or `tls://`) → a client of an existing Dask scheduler
(`dask scheduler` + `dask worker ADDRESS --nthreads 1`, see docs/cluster.md), left
running on exit. The executor submits with `retries`, so a task that fails on a worker
is run again; a task whose worker dies is rescheduled by the scheduler itself.

An unreachable scheduler, or one without workers, is an `InputError` with one line,
raised within `connect_timeout` seconds and before any work is submitted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from urllib.parse import urlparse

from modhifi_core.errors import InputError

SCHEMES = ("tcp", "tls")


@contextmanager
def open_executor(
    address: str | None, workers: int = 2, connect_timeout: float = 10.0, retries: int = 3
) -> Iterator[Executor | None]:
    """Yield the executor for `address` (`None`, `"local"` or `"tcp://host:port"`) and
    release it on exit. `workers`: the LocalCluster's size for `"local"`; for a remote
    scheduler, how many workers to wait for (up to `connect_timeout` seconds)."""
    if address is None:
        yield None
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"cluster.workers must be a positive integer, got {workers!r}")
    if address == "local":
        with _local_client(workers) as client:
            yield DaskExecutor(client, retries)
        return
    check_address(address)
    with _remote_client(address, workers, connect_timeout) as client:
        yield DaskExecutor(client, retries)


class DaskExecutor(Executor):
    """A `concurrent.futures.Executor` over a Dask client: `client.get_executor(retries=...)`,
    plus two things the engine's sharded passes want.

    * A `bytes` argument of 1 MiB or more (the pickled model `map_shards` passes to every
      task) is scattered to all workers once, straight from the client, and the tasks get
      a reference: the model crosses the wire once per worker, not once per task through
      the scheduler, and a killed worker's tasks find it on the others. The last such
      object is remembered, so a pass's later shards reuse it.
    * Task arguments up to 4 GiB travel without Dask's "large graph" warning: a shard's
      images stay in its task, so that the scheduler can rerun it on another worker.
    * `_max_workers`, the cluster's worker threads when the executor was made, as the
      standard pools report it: the engine's default shard count follows it.
    """

    SCATTER_BYTES = 1 << 20

    def __init__(self, client: object, retries: int) -> None:
        self._client = client
        self._inner = client.get_executor(retries=retries)
        self._max_workers = sum(client.nthreads().values())
        self._scattered: tuple[bytes, object] | None = None

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN201 (the Executor signature)
        import dask

        arguments = [self._by_reference(arg) for arg in args]
        # A shard's images stay in the task on purpose (the scheduler can rerun it elsewhere
        # only if it holds them): no "large graph" warning for them.
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
            return self._inner.submit(fn, *arguments, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait and not cancel_futures)
        self._scattered = None

    def _by_reference(self, arg: object) -> object:
        if not isinstance(arg, bytes) or len(arg) < self.SCATTER_BYTES:
            return arg
        if self._scattered is None or self._scattered[0] is not arg:
            self._scattered = (arg, self._client.scatter(arg, broadcast=True, hash=True))
        return self._scattered[1]


def check_address(address: str | None) -> None:
    """`InputError` unless `address` is None, `local` or `tcp://host:port` (a scheme of `SCHEMES`)."""
    if address is None or address == "local":
        return
    parsed = urlparse(address)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme not in SCHEMES or not parsed.hostname or port is None:
        raise InputError(f"cluster.address must be null, 'local' or tcp://host:port, got {address!r}")


@contextmanager
def _local_client(workers: int) -> Iterator[object]:
    import dask
    from distributed import Client, LocalCluster

    # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's
    # adaptive mmap threshold: every large torch temporary is then a fresh mmap, and the
    # statistics pass ran 4x slower on a worker than in this process (measured). And a worker
    # runs its tasks in a thread other than the main one, whose allocations glibc serves from
    # a secondary arena that it hands back to the kernel eagerly: the same pass took 1.45x
    # the CPU time there (ResNet-50, 224 px); with one arena (MALLOC_ARENA_MAX=1), 0.95x.
    environ = {"MALLOC_TRIM_THRESHOLD_": None, "MALLOC_ARENA_MAX": 1}
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextmanager
def _remote_client(address: str, workers: int, connect_timeout: float) -> Iterator[object]:
    from distributed import Client

    try:
        client = Client(address, timeout=connect_timeout)
    except (OSError, TimeoutError) as error:
        raise InputError(
            f"cannot reach the Dask scheduler at {address} within {connect_timeout:g} s "
            f"({type(error).__name__}); start it with `dask scheduler` or set cluster.address: null"
        ) from None
    try:
        try:
            client.wait_for_workers(workers, timeout=connect_timeout)
        except (OSError, TimeoutError):
            found = len(client.scheduler_info(n_workers=-1)["workers"])
            raise InputError(
                f"the Dask scheduler at {address} has {found} of {workers} workers after {connect_timeout:g} s; "
                f"start them with `dask worker {address} --nthreads 1`"
            ) from None
        yield client
    finally:
        client.close()
