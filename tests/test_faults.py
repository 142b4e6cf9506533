"""Bad input and faults, end to end: every notebook rejects a bad parameter with a message
naming it; a diverging run stops with its step and config and is never cached; a sweep
killed at an arbitrary moment leaves nothing a later run would read as valid."""

import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from vqstudy import runner, runs
from vqstudy.params import REPO_ROOT
from vqstudy.training import Config, TrainingDiverged, train

BAD_PARAMETERS = [  # (parameters, text the error must contain)
    ({"profile": "fast"}, "profile='fast' is not a profile"),
    ({"sedes": [1, 2]}, "unknown parameter 'sedes'"),
    ({"total_steps": -3}, "total_steps=-3 is out of range"),
    ({"seeds": "zero"}, "seeds='zero' has the wrong type"),
    ({"pretrain_steps": 10_000_000}, "pretrain_steps=10000000 is invalid"),
]


def error_output(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(o.get("evalue", "") + "\n".join(o.get("traceback", []))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.get("output_type") == "error")


# every notebook gets a misspelled name and an out-of-range value; the other kinds of bad
# input go through the same validation, tried on the first notebook
CASES = [(name, *BAD_PARAMETERS[i]) for name in runner.executed_notebooks() for i in (1, 2)]
CASES += [(runner.executed_notebooks()[0], *BAD_PARAMETERS[i]) for i in (0, 3, 4)]


@pytest.mark.slow
@pytest.mark.parametrize("name, bad, message", CASES, ids=[f"{n}-{next(iter(b))}" for n, b, _ in CASES])
def test_a_bad_parameter_stops_the_notebook_with_a_message_naming_it(name, bad, message, tmp_path):
    import papermill

    out = tmp_path / f"{name}.ipynb"
    parameters = {"profile": "smoke", **bad}
    with pytest.raises(PapermillExecutionError) as err:
        papermill.execute_notebook(str(REPO_ROOT / "notebooks" / f"{name}.ipynb"), str(out), parameters=parameters,
                                   cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    assert message in str(err.value)
    assert message in error_output(out)  # the reader of the executed notebook sees it too
    assert not list(tmp_path.glob("*.verdict.json"))  # no verdict from a run that never ran


def test_divergence_names_the_step_and_the_config_and_is_never_cached(tmp_path):
    cfg = Config(n_train_per_class=50, n_eval_per_class=10, total_steps=40, batch_size=50, codebook_size=8,
                 kmeans_iters=2, lr=1e12, regime="baseline")
    with pytest.raises(TrainingDiverged, match=r"at vq step \d+; config: .*'lr': 1000000000000.0"):
        train(cfg)
    with pytest.raises(runs.SweepFailed, match="1 of 2 runs failed"):
        runs.run_all([cfg, cfg.replace(lr=1e-3)], progress=False)
    stored = list(runs.cache_dir().glob("*.pt"))
    assert [p.name for p in stored] == [f"{runs.run_key(cfg.replace(lr=1e-3))}.pt"]


SWEEP = """
from vqstudy import runs
from vqstudy.training import Config
configs = [Config(n_train_per_class=200, n_eval_per_class=50, total_steps=150, batch_size=64, codebook_size=16,
                  kmeans_iters=3, seed=s) for s in range(40)]
runs.run_all(configs, progress=False)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [1.5, 2.7, 4.1])
def test_a_sweep_killed_at_any_moment_leaves_only_valid_runs(delay, tmp_path):
    env = {**os.environ, "VQSTUDY_RUNS": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-c", SWEEP], env=env, start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    os.environ["VQSTUDY_RUNS"] = env["VQSTUDY_RUNS"]  # restored by the autouse fixture's monkeypatch
    files = sorted((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
    finished = [p for p in files if p.suffix == ".pt"]
    for path in finished:  # every file that looks like a result is a complete, valid one
        assert runs.load_run(path) is not None, path
    # whatever was half-written is not named like a result and is never read as one
    assert all(p.suffix == ".pt" or p.name.endswith(".tmp") for p in files)
