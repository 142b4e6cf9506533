"""Sweeps on a real Dask cluster: two worker processes on loopback, training for real.

One cluster serves the whole module (starting worker processes and importing torch in
them costs seconds); each test has its own run cache (conftest), which the client passes
to the workers explicitly. Workers run torch on one thread (Dask sets OMP_NUM_THREADS=1),
and so does the in-process reference, so metrics agree bit for bit."""

import os
import signal
import threading
import time

import pytest
import torch

distributed = pytest.importorskip("distributed")

from vqstudy import runs  # noqa: E402
from vqstudy.training import Config  # noqa: E402

pytestmark = pytest.mark.slow

TINY = dict(n_train_per_class=60, n_eval_per_class=20, total_steps=80, pretrain_steps=40, batch_size=64,
            codebook_size=16, kmeans_iters=5, keep_embeddings=100)
CONFIGS = [Config(regime=r, seed=s, **TINY) for r in ("baseline", "pretrain") for s in (0, 1)]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stored():
    return sorted(p.name for p in runs.cache_dir().glob("*.pt"))


def keys(configs):
    return sorted(f"{runs.run_key(c)}.pt" for c in configs)


def test_cluster_sweep_gives_the_in_process_metrics_and_fills_the_cache(cluster, monkeypatch, one_thread):
    here = runs.run_all(CONFIGS, use_cache=False, progress=False, workers=1)
    there = runs.run_all(CONFIGS, progress=False, scheduler=cluster.scheduler_address)  # an address: run_all connects
    assert [r["metrics"] for r in there] == [r["metrics"] for r in here]
    assert [r["config"] for r in there] == [r["config"] for r in here]
    assert stored() == keys(CONFIGS)

    def must_not_train(cfg, progress=False, pretrained=None):
        raise AssertionError(f"trained {cfg} again")

    monkeypatch.setattr(runs, "train", must_not_train)  # the notebook afterwards only reads
    assert [r["metrics"] for r in runs.run_all(CONFIGS, progress=False, workers=1)] == [r["metrics"] for r in here]


def test_failed_run_is_named_and_the_others_are_kept(client):
    bad = CONFIGS[1].replace(lr=1e6)  # the loss overflows at once: TrainingDiverged on the worker
    with pytest.raises(runs.SweepFailed) as info:
        runs.run_all([CONFIGS[0], bad, CONFIGS[2]], progress=False, scheduler=client)
    message = str(info.value)
    assert "1 of 3 runs failed" in message
    assert f"seed=1 lr=1000000.0 (run {runs.run_key(bad)}): TrainingDiverged: loss is" in message
    assert [cfg for cfg, _ in info.value.failures] == [bad]
    assert stored() == keys([CONFIGS[0], CONFIGS[2]])


def test_client_stores_what_a_worker_could_not(client):
    """A worker without the shared filesystem (here: whose writes fail) still returns its
    result; the client, not finding it in the cache, stores it."""
    def break_saving():
        from vqstudy import runs as worker_runs

        def fails(result, path):
            raise OSError("read-only file system")

        worker_runs._real_save_run, worker_runs.save_run = worker_runs.save_run, fails

    def restore_saving():
        from vqstudy import runs as worker_runs

        worker_runs.save_run = worker_runs._real_save_run

    client.run(break_saving)
    try:
        results = runs.run_all(CONFIGS[:2], progress=False, scheduler=client)
    finally:
        client.run(restore_saving)
    assert stored() == keys(CONFIGS[:2])
    assert [runs.load_run(runs.run_path(c), c)["metrics"] for c in CONFIGS[:2]] == [r["metrics"] for r in results]


def test_worker_killed_mid_sweep_loses_and_duplicates_nothing(client):
    longer = [c.replace(total_steps=400, pretrain_steps=200, seed=c.seed + 10 * i) for i, c in enumerate(CONFIGS)]
    pids = client.run(os.getpid)
    outcome = {}
    sweep = threading.Thread(target=lambda: outcome.update(results=runs.run_all(longer, progress=False,
                                                                                  scheduler=client)))
    sweep.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        busy = [w for w, tasks in client.processing().items() if tasks]
        if busy:
            time.sleep(0.5)  # let it get into training
            victim = busy[0]
        time.sleep(0.05)
    assert victim is not None, "no worker ever started a run"
    in_flight = [k.removeprefix("vqstudy-run-") + ".pt" for k in client.processing()[victim]]
    os.kill(pids[victim], signal.SIGKILL)
    lost = [name for name in in_flight if name not in stored()]
    assert lost, "the killed worker had no unfinished run"
    sweep.join(timeout=120)
    assert not sweep.is_alive()
    assert [r["config"] for r in outcome["results"]] == [runs.dataclasses.asdict(c) for c in longer]
    assert stored() == keys(longer)  # every run once, one file each, the lost ones redone
    assert set(lost) <= set(stored())
    assert len(stored()) == len(longer)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
    assert pids[victim] not in client.run(os.getpid).values()
