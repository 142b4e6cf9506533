"""A shared run cache runs no one's code, impossible sizes are refused before anything is
allocated, two users of one cache do not spoil it, and notebook kernels talk over private
local sockets."""

import hashlib
import os
import pickle
import subprocess
import sys
import textwrap
import time

import nbformat
import pytest

from vqstudy import runs, sweeps
from vqstudy.training import Config

TINY = dict(n_train_per_class=40, n_eval_per_class=10, total_steps=20, pretrain_steps=10, batch_size=32,
            codebook_size=8, kmeans_iters=2, keep_embeddings=50, curve_points=2, curve_examples=50)


class CreatesAFile:
    """A pickle that, when unpickled by an unrestricted loader, runs code: it creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant(path, payload: bytes) -> None:
    """A run file with a valid header and checksum around ``payload``: what anyone who can
    write to the cache can make."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(runs.MAGIC + b" " + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def test_a_planted_file_that_would_run_code_is_refused_unread_and_recomputed(tmp_path):
    cfg = Config(**TINY)
    marker = tmp_path / "pwned"
    planted = runs.run_path(cfg)
    plant(planted, pickle.dumps({"metrics": {}, "config": {}, "x": CreatesAFile(marker)}))
    assert pickle.loads(pickle.dumps(CreatesAFile(tmp_path / "control"))) and (tmp_path / "control").exists()

    started = time.perf_counter()
    with pytest.warns(UserWarning, match=f"{planted}.*something other than plain data"):
        assert runs.load_run(planted, cfg) is None
    assert time.perf_counter() - started < 5
    assert not marker.exists() and not planted.exists()  # nothing ran; the file is gone

    plant(planted, pickle.dumps(CreatesAFile(marker)))  # the sweep recomputes it like a corrupt file
    with pytest.warns(UserWarning, match="something other than plain data"):
        result = runs.run_all([cfg], progress=False, workers=1)[0]
    assert not marker.exists() and result["metrics"]["perplexity"] >= 1
    assert runs.load_run(planted, cfg)["metrics"] == result["metrics"]


def test_a_planted_pretraining_is_refused_too(tmp_path):
    store = runs.PretrainedStore()
    marker = tmp_path / "pwned"
    plant(store.path("key"), pickle.dumps({"model": CreatesAFile(marker)}))
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.get("key") is None
    assert not marker.exists()


def test_a_stored_run_is_plain_data_and_reads_back(tmp_path):
    cfg = Config(regime="pretrain", **TINY)
    result = runs.cached_train(cfg)
    again = runs.load_run(runs.run_path(cfg), cfg)
    assert again["metrics"] == result["metrics"] and repr(again["curves"]) == repr(result["curves"])  # NaN-aware


@pytest.mark.parametrize("overrides, message", [
    ({"codebook_size": [16, 1_000_000_000]},
     r"parameter codebook_size=\[16, 1000000000\] is out of range: 1000000000 is not allowed, must be at most "
     r"the 1000 encoder outputs its K-means is given"),
    ({"kmeans_samples": 5}, r"parameter codebook_size=\[8, 32\] is out of range: 8 is not allowed, must be at most the 5"),
])
def test_a_codebook_larger_than_its_kmeans_sample_is_refused_in_seconds(overrides, message):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        sweeps.plan("tokens_collapse", "smoke", overrides)
    assert time.perf_counter() - started < 5


def test_a_sweep_too_large_for_the_machine_names_the_parameter_and_the_estimate(monkeypatch):
    monkeypatch.setattr(sweeps, "available_memory", lambda: 2**30)  # a machine with 1 GiB free
    with pytest.raises(ValueError) as info:
        sweeps.plan("tokens_collapse", "smoke", {"codebook_size": [16, 4_000_000], "kmeans_samples": 4_000_000,
                                                 "n_train_per_class": 400_000})
    message = str(info.value)
    assert message.startswith("parameter codebook_size=[16, 4000000] is too large for this machine")
    assert "needs about" in message and "GiB" in message and "1.0 GiB is available" in message
    assert sweeps.plan("tokens_collapse", "smoke").configs  # what fits still plans


SWEEP = textwrap.dedent("""
    import sys
    from vqstudy import runs, sweeps
    plan = sweeps.plan("tokens_collapse", "smoke", {"seed": [0, 1], "codebook_size": [8, 16]})
    results = runs.run_all(plan.configs, progress=False, workers=1)
    print(sorted(str(r["metrics"]["mse"]) for r in results))
""")


@pytest.mark.slow
def test_two_sweeps_on_one_cache_at_once_store_every_run_once_and_agree(tmp_path):
    env = {**os.environ, "VQSTUDY_RUNS": str(tmp_path / "shared")}
    procs = [subprocess.Popen([sys.executable, "-c", SWEEP], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1]  # both books would show the same numbers
    stored = sorted((tmp_path / "shared").glob("*.pt"))
    plan = sweeps.plan("tokens_collapse", "smoke", {"seed": [0, 1], "codebook_size": [8, 16]})
    os.environ["VQSTUDY_RUNS"] = env["VQSTUDY_RUNS"]  # restored by the autouse fixture's monkeypatch
    assert sorted(p.name for p in stored) == sorted(f"{runs.run_key(c)}.pt" for c in plan.configs)
    for cfg in plan.configs:
        assert runs.load_run(runs.run_path(cfg), cfg) is not None
    assert not list((tmp_path / "shared").glob(".*.tmp"))  # no half-written file left behind


@pytest.mark.slow
def test_notebook_kernels_use_private_local_sockets_not_tcp(tmp_path):
    """A kernel started over TCP warns that anyone on the machine can listen to it; the
    runner's kernels use IPC sockets in the user's private runtime folder instead."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile = "quick"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import json, ipykernel.connect\n"
                                  "print(json.load(open(ipykernel.connect.get_connection_file()))['transport'])")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "probe.ipynb")
    script = f"from pathlib import Path; from vqstudy import runner; runner.execute('probe', 'smoke', Path({str(tmp_path)!r}))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "without encryption" not in done.stderr
    executed = nbformat.read(tmp_path / "book" / "claims" / "probe.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"].strip() == "ipc"
