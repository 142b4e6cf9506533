"""The run cache in one process: keys, atomic writes, corrupt files, interrupted and
failing sweeps, clearing. ``train`` is replaced by a fake that counts its calls, so these
tests check the bookkeeping in milliseconds; tests/test_dask.py trains for real."""

import dataclasses
import warnings

import pytest

from vqstudy import runs
from vqstudy.__main__ import main
from vqstudy.training import Config, TrainingDiverged

CONFIGS = [Config(regime=r, seed=s, codebook_size=16) for r in ("baseline", "pretrain") for s in (0, 1, 2)]


@pytest.fixture(autouse=True)
def no_scheduler_from_the_environment(monkeypatch):
    """A developer's own $VQSTUDY_SCHEDULER must not send these tests' runs to their cluster."""
    monkeypatch.delenv(runs.SCHEDULER_ENV, raising=False)


@pytest.fixture
def trained(monkeypatch):
    """Replace training with a fake: returns a small result and records each config it trains."""
    calls = []

    def fake_train(cfg, progress=False):
        calls.append(cfg)
        if cfg.lr > 1:
            raise TrainingDiverged(f"loss is nan at vq step 1 (lr={cfg.lr})")
        return {"config": dataclasses.asdict(cfg), "metrics": {"mse": 0.1 * cfg.seed, "perplexity": 3.0},
                "seconds": 0.0}

    monkeypatch.setattr(runs, "train", fake_train)
    return calls


def stored():
    return sorted(p.name for p in runs.cache_dir().iterdir()) if runs.cache_dir().exists() else []


def test_second_sweep_reads_the_cache_and_trains_nothing(trained):
    first = runs.run_all(CONFIGS, progress=False)
    assert len(trained) == 6 and stored() == sorted(f"{runs.run_key(c)}.pt" for c in CONFIGS)
    second = runs.run_all(CONFIGS, progress=False)
    assert len(trained) == 6 and second == first
    assert [r["config"]["seed"] for r in second] == [c.seed for c in CONFIGS]  # in order


def test_key_depends_on_every_config_field_and_on_the_code(monkeypatch):
    cfg = Config()
    assert runs.run_key(cfg) == runs.run_key(Config())
    assert runs.run_key(cfg) != runs.run_key(cfg.replace(kmeans_samples=9999))
    before = runs.run_key(cfg)
    monkeypatch.setattr(runs, "code_version", lambda: "changed")
    assert runs.run_key(cfg) != before


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "old format", "empty", "another config"])
def test_corrupt_run_file_is_detected_deleted_and_redone(trained, damage):
    cfg = CONFIGS[0]
    runs.run_all([cfg, CONFIGS[1]], progress=False)
    path = runs.run_path(cfg)
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[:len(blob) // 2])
    elif damage == "flip a byte":
        path.write_bytes(blob[:-20] + bytes([blob[-20] ^ 1]) + blob[-19:])
    elif damage == "old format":  # what the first version of the cache wrote: a bare torch.save
        path.write_bytes(blob.partition(b"\n")[2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a valid file of another run stored under this run's key
        path.write_bytes(runs.run_path(CONFIGS[1]).read_bytes())
    with pytest.warns(UserWarning, match="is corrupt"):
        result = runs.run_all([cfg], progress=False)[0]
    assert result["config"] == dataclasses.asdict(cfg)
    assert trained.count(cfg) == 2  # trained again, not read
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the redone file is clean
        assert runs.load_run(path, cfg)["config"] == dataclasses.asdict(cfg)


def test_interrupted_sweep_keeps_finished_runs_and_resumes(trained, monkeypatch):
    real = runs.train

    def interrupted_at_the_fourth_run(cfg, progress=False):
        if len(trained) == 3:
            raise KeyboardInterrupt  # Ctrl-C, or `make book` killed
        return real(cfg, progress)

    monkeypatch.setattr(runs, "train", interrupted_at_the_fourth_run)
    with pytest.raises(KeyboardInterrupt):
        runs.run_all(CONFIGS, progress=False)
    assert len(stored()) == 3
    monkeypatch.setattr(runs, "train", real)
    runs.run_all(CONFIGS, progress=False)
    assert trained == CONFIGS  # the three finished runs were not trained again
    assert len(stored()) == 6


def test_write_interrupted_half_way_leaves_no_file(monkeypatch):
    path = runs.run_path(CONFIGS[0])

    def dies(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        runs.save_run({"metrics": {}}, path)
    assert stored() == []  # neither the run nor its temporary file


def test_failed_run_is_named_and_the_others_are_kept(trained):
    bad = CONFIGS[1].replace(lr=1e6)
    configs = [CONFIGS[0], bad, CONFIGS[2]]
    with pytest.raises(runs.SweepFailed) as info:
        runs.run_all(configs, progress=False)
    assert "1 of 3 runs failed" in str(info.value)
    assert f"seed=1 lr=1000000.0 (run {runs.run_key(bad)}): TrainingDiverged: loss is nan" in str(info.value)
    assert [cfg for cfg, _ in info.value.failures] == [bad]
    assert stored() == sorted(f"{runs.run_key(c)}.pt" for c in (CONFIGS[0], CONFIGS[2]))


def test_clear_and_the_clean_runs_command(trained, capsys):
    runs.run_all(CONFIGS, progress=False)
    (runs.cache_dir() / "x.pt123.tmp").write_bytes(b"partial")  # left by a killed write
    assert main(["clean-runs"]) == 0
    assert "removed 7 files" in capsys.readouterr().out
    assert stored() == [] and runs.clear() == 0


def test_sweep_command_fills_the_cache_that_the_notebook_reads(trained, capsys):
    from vqstudy import experiments

    assert main(["sweep", "tokens_collapse", "--profile", "smoke", "-p", "seeds", "[0, 1]"]) == 0
    configs = experiments.configs_for("tokens_collapse", "smoke", {"seeds": [0, 1]})
    assert len(trained) == len(configs) == 8
    assert "8 runs: 0 from the cache, 8 computed" in capsys.readouterr().out
    runs.run_all(configs, progress=False)  # what the notebook does next: reads, trains nothing
    assert len(trained) == 8
    assert main(["sweep", "tokens_collapse", "--profile", "smoke", "-p", "seeds", "[0, 1]"]) == 0
    assert "8 runs: 8 from the cache, 0 computed" in capsys.readouterr().out


def test_sweep_command_reports_failures(trained, capsys):
    assert main(["sweep", "tokens_collapse", "--profile", "smoke", "-p", "lr", "1000000.0"]) == 1
    err = capsys.readouterr().err
    assert "4 of 4 runs failed" in err and "TrainingDiverged" in err


def test_sweep_command_rejects_a_misspelled_parameter(capsys):
    assert main(["sweep", "tokens_collapse", "--profile", "smoke", "-p", "seed", "[0]"]) == 2
    assert "unknown parameter 'seed'" in capsys.readouterr().err
