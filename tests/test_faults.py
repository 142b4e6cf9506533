"""Bad input and faults, end to end: every chapter rejects a bad parameter with a message
naming it (and the executed notebook shows it, with no verdict); a diverging run stops with
its step and config and is never cached; a sweep killed at an arbitrary moment leaves
nothing a later run would read as valid."""

import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest
import yaml
from papermill.exceptions import PapermillExecutionError

from vqstudy import runs
from vqstudy.chapter import Chapter
from vqstudy.params import REPO_ROOT
from vqstudy.training import Config, TrainingDiverged, train

NOTEBOOKS = REPO_ROOT / "notebooks"
CHAPTERS = sorted(yaml.safe_load((NOTEBOOKS / "profiles.yml").read_text()))

BAD_PARAMETERS = [  # (parameters, text the error must contain)
    ({"profile": "fast"}, "parameter profile='fast' is not a profile: allowed ['smoke', 'quick', 'long', 'paper']"),
    ({"sedes": [1, 2]}, "unknown parameter 'sedes' (value [1, 2])"),
    ({"total_steps": -3}, "parameter total_steps=-3 is out of range: must be a positive integer"),
    ({"seed": "zero"}, "parameter seed='zero' has the wrong type: expected a non-empty list of int"),
    ({"pretrain_steps": 10_000_000}, "parameter pretrain_steps=10000000 is out of range: must be between 1 and"),
]


def parameters_source(name: str) -> str:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    return next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def chapter_parameters(name: str, injected: dict):
    """What the notebook's first cells do, in this process: ``Chapter(globals())``, the
    parameters cell, papermill's injected cell, ``ch.parameters()``."""
    namespace = {}
    ch = Chapter(namespace)
    exec(parameters_source(name), namespace)
    namespace.update({"PAPERMILL_INPUT_PATH": str(NOTEBOOKS / f"{name}.ipynb"), **injected})
    return ch.parameters()


def cases():
    for name in CHAPTERS:
        defaults = yaml.safe_load((NOTEBOOKS / "profiles.yml").read_text())[name]["defaults"]
        for bad, message in BAD_PARAMETERS:
            if set(bad) <= {"profile", "sedes"} | set(defaults) and not (
                    "pretrain_steps" in bad and "regime" not in defaults and name != "template"):
                yield name, bad, message


@pytest.mark.parametrize("name, bad, message", list(cases()), ids=[f"{n}-{next(iter(b))}" for n, b, _ in cases()])
def test_a_bad_parameter_stops_the_chapter_at_its_parameters_with_a_message_naming_it(name, bad, message):
    with pytest.raises(ValueError) as err:
        chapter_parameters(name, {"profile": "smoke", **bad})
    assert message in str(err.value)


def test_a_chapter_that_cannot_tell_its_name_says_how_to_run_it(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    namespace = {}
    ch = Chapter(namespace)
    exec(parameters_source("template"), namespace)
    with pytest.raises(ValueError, match="cannot tell which chapter this notebook is: execute it with papermill's "
                                         "--inject-input-path"):
        ch.parameters()


def error_output(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(o.get("evalue", "") + "\n".join(o.get("traceback", []))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.get("output_type") == "error")


@pytest.mark.slow
def test_the_executed_notebook_shows_the_message_and_records_no_verdict(tmp_path):
    import papermill

    out = tmp_path / "tokens_collapse.ipynb"
    message = "unknown parameter 'sedes' (value [1, 2])"
    with pytest.raises(PapermillExecutionError) as err:
        papermill.execute_notebook(str(NOTEBOOKS / "tokens_collapse.ipynb"), str(out), cwd=str(tmp_path),
                                   parameters={"profile": "smoke", "sedes": [1, 2],
                                               "PAPERMILL_INPUT_PATH": str(NOTEBOOKS / "tokens_collapse.ipynb")},
                                   kernel_name="python3", progress_bar=False)
    assert message in str(err.value)
    assert message in error_output(out)  # the reader of the executed notebook sees it too
    assert not list(tmp_path.glob("*.verdict.json"))  # no verdict from a run that never ran
    assert not runs.cache_dir().exists() or not list(runs.cache_dir().glob("*.pt"))  # nothing trained


def test_divergence_names_the_step_and_the_config_and_is_never_cached():
    cfg = Config(n_train_per_class=50, n_eval_per_class=10, total_steps=40, batch_size=50, codebook_size=8,
                 kmeans_iters=2, lr=1e12, regime="baseline")
    with pytest.raises(TrainingDiverged, match=r"at vq step \d+; config: .*'lr': 1000000000000.0"):
        train(cfg)
    with pytest.raises(runs.SweepFailed, match="1 of 2 runs failed"):
        runs.run_all([cfg, cfg.replace(lr=1e-3)], progress=False, workers=1)
    stored = list(runs.cache_dir().glob("*.pt"))
    assert [p.name for p in stored] == [f"{runs.run_key(cfg.replace(lr=1e-3))}.pt"]


SWEEP = """
from vqstudy import runs
from vqstudy.training import Config
configs = [Config(n_train_per_class=200, n_eval_per_class=50, total_steps=150, batch_size=64, codebook_size=16,
                  kmeans_iters=3, seed=s) for s in range(40)]
runs.run_all(configs, progress=False, workers=2)
"""


@pytest.mark.slow
def test_a_sweep_killed_at_any_moment_leaves_only_valid_runs(tmp_path, monkeypatch):
    """Killed (SIGKILL, the sweep and its worker processes) a moment after its first run
    was stored: in the middle of other runs and writes. (One moment: starting the sweep
    costs seconds; files.atomic_write's own test interrupts a write half-way.)"""
    delay = 0.4
    cache = tmp_path / "runs"
    env = {**os.environ, "VQSTUDY_RUNS": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", SWEEP], env=env, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(cache.glob("*.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    monkeypatch.setenv("VQSTUDY_RUNS", str(cache))
    files = sorted(cache.glob("*"))
    finished = [p for p in files if p.suffix == ".pt"]
    assert 0 < len(finished) < 40, "the sweep was not killed in the middle"
    for path in finished:  # every file that looks like a result is a complete, valid one
        assert runs.load_run(path) is not None, path
    # whatever was half-written is not named like a result and is never read as one
    assert all(p.suffix == ".pt" or p.name.endswith(".tmp") or p.name == "pretrained" for p in files)
