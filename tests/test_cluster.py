"""Statistics on a real Dask cluster equal the single-process statistics (tasks/cluster.py
supplies the executor, modhifi_core.sharding the shards): a LocalCluster of two worker
processes in the fast suite; in the slow suite a `dask scheduler` and two `dask worker`
processes on 127.0.0.1, one of them SIGKILLed mid-run. All on loopback, bounded in time.

Tolerance: the shards compute the very per-batch float64 products of the local pass, and
only the order of the float64 additions differs, so results agree to a few ulps; 1e-10
relative (max |a - b| / max |b| per field) leaves five orders of magnitude to spare
while any lost, doubled or misplaced batch shows up at 1e-2 or more.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from modhifi_core.errors import InputError
from modhifi_core.models import ModelConfig, build_model
from modhifi_core.statistics import collect_kept_gram, collect_statistics
from tasks.cluster import open_executor

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent


def relative_error(a: dict, b: dict) -> float:
    worst = 0.0
    assert set(a) == set(b)
    for name in b:
        assert (a[name].samples, a[name].positions) == (b[name].samples, b[name].positions)
        for field in ("cross", "gram_diag", "output_sq", "input_sum"):
            x, y = getattr(a[name], field), getattr(b[name], field)
            worst = max(worst, ((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item())
    return worst


def tiny_model_and_batches(batch_sizes: list[int], width: int = 4, image_size: int = 8):
    """A resnet18 (convs, BatchNorm, residuals, a Linear head) in float64, with batches."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18", width=width, image_size=image_size)).double().eval()
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 1, image_size, image_size, dtype=torch.float64, generator=generator) for n in batch_sizes]
    return model, batches


@pytest.fixture(scope="module")
def local_cluster():
    with open_executor("local", workers=2) as executor:
        yield executor


def test_local_cluster_statistics_equal_single_process(local_cluster):
    model, batches = tiny_model_and_batches([5, 7, 3, 6, 4, 8, 2, 5, 6])
    local = collect_statistics(model, batches)
    assert local_cluster._max_workers == 2
    with distributed.get_task_stream() as stream:
        sharded = collect_statistics(model, batches, executor=local_cluster)  # default: 2 per worker
    shards = [task for task in stream.data if task["key"].startswith("run_shard")]
    assert len(shards) == 4
    assert len({task["worker"] for task in shards}) == 2  # both worker processes did work
    assert relative_error(sharded, local) <= 1e-10
    uneven = collect_statistics(model, batches, layers=["layer1.0.conv1", "fc"], executor=local_cluster, shards=5)
    assert relative_error(uneven, {name: local[name] for name in uneven}) <= 1e-10


def test_local_cluster_kept_gram_equals_single_process(local_cluster):
    model, batches = tiny_model_and_batches([5, 7, 3, 6])
    kept = {"layer2.0.conv2": torch.tensor([5, 0, 2]), "fc": torch.tensor([1, 7])}
    local = collect_kept_gram(model, batches, kept)
    sharded = collect_kept_gram(model, batches, kept, executor=local_cluster, shards=3)
    for name in kept:
        torch.testing.assert_close(sharded[name], local[name], rtol=1e-10, atol=1e-12)


class CountingThreadPool(ThreadPoolExecutor):
    """A real thread pool that counts the shard tasks per pass (`run_shard`'s `work`)."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.passes: Counter = Counter()

    def submit(self, fn, /, *args, **kwargs):
        self.passes[args[0].__name__] += 1
        return super().submit(fn, *args, **kwargs)


def shard_tasks(stream: list[dict]) -> int:
    return len([task for task in stream if task["key"].startswith("run_shard")])


def test_two_round_prune_with_an_executor_is_the_prune_without(local_cluster):
    """Target 0.3 takes two rounds (ceil(log2(1/0.3))): each round's statistics and kept-set
    Grams (full compensation) go through the executor, and the pruned model is the same."""
    from modhifi_core import prune

    model, batches = tiny_model_and_batches([6, 6, 6, 6, 6, 6], width=8)
    options = {"target_flops": 0.3, "compensation": "full"}
    alone = prune(model, batches, **options)
    assert len(alone.report["rounds"]) == 2
    with CountingThreadPool(2) as threads:
        by_threads = prune(model, batches, executor=threads, **options)
    assert threads.passes == {"collect_statistics": 2 * 4, "collect_kept_gram": 2 * 4}  # 2 rounds x 4 shards
    with distributed.get_task_stream() as stream:
        by_cluster = prune(model, batches, executor=local_cluster, **options)
    assert shard_tasks(stream.data) == 4 * 4
    expected = alone.model.state_dict()
    for pruned in (by_threads, by_cluster):
        assert pruned.report["layers"] == alone.report["layers"]  # the same channel counts...
        state = pruned.model.state_dict()
        assert state.keys() == expected.keys()
        # ...and the same channels: another kept channel would differ at 1e-1. The least-squares
        # refit amplifies the sums' round-off (measured: 1e-9 of a tensor's largest entry).
        for name, value in expected.items():
            scale = value.abs().max().clamp_min(1e-300)
            assert (state[name] - value).abs().max() / scale <= 1e-8, name


def test_modhifi_u_with_an_executor_is_modhifi_u_without(tiny_digits_checkpoint, digits, local_cluster):
    """The HiFi scoring pass and the logit mask's pass go through the executor; the same
    components are edited, so the weights are bit for bit those of the single-process run."""
    from modhifi_core.checkpoint import load_checkpoint
    from modhifi_core.splits import class_split
    from modhifi_core.unlearning import unlearn

    model, split = load_checkpoint(tiny_digits_checkpoint).model, class_split(digits.train, 3)
    options = {"logit_mask": True, "samples": 64, "batch_size": 16}  # the HiFi pass: 4 batches
    alone = unlearn(model, split, "modhifi", **options)
    with CountingThreadPool(2) as threads:
        by_threads = unlearn(model, split, "modhifi", executor=threads, **options)
    assert threads.passes == {"collect_statistics": 1 + 4}  # the head's pass (one batch), the HiFi pass
    with distributed.get_task_stream() as stream:
        by_cluster = unlearn(model, split, "modhifi", executor=local_cluster, **options)
    assert shard_tasks(stream.data) == 1 + 4
    expected = alone.model.state_dict()
    for result in (by_threads, by_cluster):
        assert result.log["edited_components"] == alone.log["edited_components"]
        assert result.log["head_negated"] == alone.log["head_negated"]
        assert all(torch.equal(result.model.state_dict()[name], value) for name, value in expected.items())


def test_bad_data_on_a_worker_is_one_input_error_not_retried(local_cluster):
    model, batches = tiny_model_and_batches([5, 7, 3])
    with torch.no_grad():
        model.layer3[0].bn1.running_var.fill_(-1.0)  # NaN from layer3.0.bn1 on
    with distributed.get_task_stream() as stream:
        with pytest.raises(InputError, match="layer3.0.conv2"):
            collect_statistics(model, batches, executor=local_cluster, shards=3)
    assert len([task for task in stream.data if task["key"].startswith("run_shard")]) == 3  # once each


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_scheduler_is_one_clear_line_quickly():
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(InputError) as caught:
        with open_executor(address, workers=1, connect_timeout=2):
            raise AssertionError("no work may start without a scheduler")
    assert time.monotonic() - start < 20
    message = str(caught.value)
    assert "\n" not in message and address in message and "dask scheduler" in message


@pytest.mark.parametrize("address", ["127.0.0.1:8786", "tcp://127.0.0.1", "http://127.0.0.1:8786", "locl"])
def test_malformed_addresses_are_refused(address):
    with pytest.raises(InputError, match="cluster.address must be null, 'local' or tcp://host:port"):
        with open_executor(address):
            pass


def test_no_address_means_no_executor_and_bad_worker_counts_are_refused():
    with open_executor(None) as executor:
        assert executor is None
    for workers in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="cluster.workers must be a positive integer"):
            with open_executor("local", workers=workers):
                pass


# --- slow: a real `dask scheduler` and two `dask worker` processes ---------------------------


def _dask_cli(*args: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MODHIFI_PROGRESS="0", DO_NOT_TRACK="true")
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "dask"), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory):
    """`dask scheduler` + two `dask worker ADDRESS --nthreads 1 --no-nanny` on 127.0.0.1 (no
    nanny: the worker is the process we start, so SIGKILL really takes a worker away)."""
    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    processes = [_dask_cli("scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard", log=logs / "s.log")]
    try:
        for index in range(2):
            worker = ("worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1")
            processes.append(_dask_cli(*worker, "--name", f"w{index}", log=logs / f"w{index}.log"))
        yield address, {f"w{index}": processes[1 + index] for index in range(2)}
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


@pytest.mark.slow
def test_dask_cli_cluster_statistics_equal_single_process(dask_processes):
    address, _ = dask_processes
    model, batches = tiny_model_and_batches([5, 7, 3, 6, 4, 8, 2, 5])
    local = collect_statistics(model, batches)
    with open_executor(address, workers=2, connect_timeout=90) as executor:
        assert executor._max_workers == 2
        sharded = collect_statistics(model, batches, executor=executor)
    assert relative_error(sharded, local) <= 1e-10


@pytest.mark.slow
def test_killed_worker_shard_is_rerun_and_the_result_is_exact(dask_processes):
    address, workers = dask_processes
    # Enough work that a shard runs for seconds: the kill lands mid-task.
    model, batches = tiny_model_and_batches([32] * 24, width=16, image_size=16)
    local = collect_statistics(model, batches)
    with open_executor(address, workers=2, connect_timeout=90) as executor:
        client = executor._client
        outcome: dict = {}

        def collect() -> None:
            try:
                outcome["stats"] = collect_statistics(model, batches, executor=executor, shards=4)
            except BaseException as error:  # reported below, in the test's thread
                outcome["error"] = error

        runner = threading.Thread(target=collect, daemon=True)
        runner.start()
        victim = _busy_worker(client, deadline=time.monotonic() + 120)
        name = client.scheduler_info(n_workers=-1)["workers"][victim]["name"]
        workers[name].send_signal(signal.SIGKILL)
        killed_mid_run = runner.is_alive()
        runner.join(timeout=300)
        assert not runner.is_alive(), "the collection did not finish within 300 s after the kill"
        survivors = [info["name"] for info in client.scheduler_info(n_workers=-1)["workers"].values()]
    assert killed_mid_run and workers[name].wait(timeout=10) == -signal.SIGKILL
    assert survivors == [next(other for other in workers if other != name)]
    assert "error" not in outcome, outcome.get("error")
    assert relative_error(outcome["stats"], local) <= 1e-10


def _busy_worker(client: object, deadline: float) -> str:
    """The address of a worker executing a shard task (polls the scheduler)."""
    while time.monotonic() < deadline:
        for worker, keys in client.processing().items():
            if any(str(key).startswith("run_shard") for key in keys):
                time.sleep(0.3)  # well inside a multi-second task
                return worker
        time.sleep(0.05)
    raise AssertionError("no shard task started on the cluster")
