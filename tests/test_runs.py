"""The run cache and the sweep.

In one process, with ``train`` replaced by a fake that counts its calls: keys, atomic
writes, corrupt files, interrupted and failing sweeps, clearing, the sweep command. Then
for real, on tiny configs: worker processes give the in-process results and store each run
once; runs sharing a pretraining train it once and give the unshared results; a failed run
in the pool is named while the others are stored."""

import dataclasses
import json
import shutil
import warnings

import pytest
import torch

from vqstudy import runs, sweeps
from vqstudy.__main__ import main
from vqstudy.training import Config, TrainingDiverged, pretrain_key

CONFIGS = [Config(regime=r, seed=s, codebook_size=16) for r in ("baseline", "pretrain") for s in (0, 1, 2)]
TINY = dict(n_train_per_class=60, n_eval_per_class=20, total_steps=60, pretrain_steps=30, batch_size=64,
            codebook_size=8, kmeans_iters=3, keep_embeddings=100, curve_points=4, curve_examples=100)


@pytest.fixture
def trained(monkeypatch):
    """Replace training with a fake: returns a small result and records each config it
    trains. Runs stay in this process (VQSTUDY_WORKERS=1), where the fake is."""
    calls = []

    def fake_train(cfg, progress=False, pretrained=None):
        calls.append(cfg)
        if cfg.lr > 1:
            raise TrainingDiverged(f"loss is nan at vq step 1 (lr={cfg.lr})")
        return {"config": dataclasses.asdict(cfg), "metrics": {"mse": 0.1 * cfg.seed, "perplexity": 3.0},
                "seconds": 0.0}

    monkeypatch.setattr(runs, "train", fake_train)
    monkeypatch.setenv("VQSTUDY_WORKERS", "1")
    return calls


def same(a, b) -> bool:
    """Equal, bit for bit, NaN equal to NaN (a curve has no loss where quantization starts)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def stored():
    return sorted(p.name for p in runs.cache_dir().glob("*.pt"))


def keys(configs):
    return sorted({f"{runs.run_key(c)}.pt" for c in configs})


def test_second_sweep_reads_the_cache_and_trains_nothing(trained):
    first = runs.run_all(CONFIGS + CONFIGS[:1], progress=False)  # a config listed twice trains once
    assert len(trained) == 6 and stored() == keys(CONFIGS)
    second = runs.run_all(CONFIGS, progress=False)
    assert len(trained) == 6 and second == first[:6]
    assert [r["config"]["seed"] for r in second] == [c.seed for c in CONFIGS]  # in order


def test_key_depends_on_every_config_field_and_on_the_code(monkeypatch):
    cfg = Config()
    assert runs.run_key(cfg) == runs.run_key(Config())
    for field in dataclasses.fields(Config):
        value = getattr(cfg, field.name)
        other = (not value if isinstance(value, bool) else value + 1 if isinstance(value, (int, float))
                 else value + "x")
        assert runs.run_key(dataclasses.replace(cfg, **{field.name: other})) != runs.run_key(cfg), field.name
    before = runs.run_key(cfg)
    monkeypatch.setattr(runs, "code_version", lambda: "changed")
    assert runs.run_key(cfg) != before


def forget_code_version():
    """code_version is read once per process (the code a process runs is the code it imported)."""
    getattr(runs.code_version, "cache_clear", lambda: None)()


@pytest.fixture
def library_copy(tmp_path, monkeypatch):
    """A copy of vqstudy's sources that runs.code_version reads instead of the real ones."""
    package = shutil.copytree(runs.PACKAGE, tmp_path / "vqstudy", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runs, "PACKAGE", package)
    forget_code_version()
    yield package
    forget_code_version()  # the real code's version again for the tests after this one


def version() -> str:
    forget_code_version()
    return runs.code_version()


def test_code_version_covers_what_training_imports_and_not_the_figures(library_copy):
    package = library_copy
    modules = runs.imported_modules("training")
    assert {"training", "quantizer", "models", "metrics", "data"} <= modules
    assert not {"plots", "scorecard", "runner", "chapter", "claims"} & modules
    before = version()
    (package / "plots.py").write_text((package / "plots.py").read_text() + "\n# a new colour\n")
    assert version() == before  # prose and figures never invalidate a run

    (package / "schedule.py").write_text("def warmup(step):\n    return 1.0\n")
    assert version() == before  # not imported yet: not part of a run
    training = package / "training.py"
    training.write_text(training.read_text().replace("import torch\n", "import torch\n\nfrom vqstudy import schedule\n", 1))
    with_schedule = version()
    assert "schedule" in runs.imported_modules("training") and with_schedule != before
    (package / "schedule.py").write_text("def warmup(step):\n    return min(1.0, step / 100)\n")
    assert version() != with_schedule  # a change inside the new module is a change of every run


def test_code_version_follows_imports_inside_functions_and_of_imported_modules(library_copy):
    package = library_copy
    (package / "deep.py").write_text("X = 1\n")
    (package / "models.py").write_text((package / "models.py").read_text()
                                       + "\n\ndef later():\n    from vqstudy.deep import X\n    return X\n")
    assert "deep" in runs.imported_modules("training")


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

    def interrupted_at_the_fourth_run(cfg, progress=False, pretrained=None):
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
    from vqstudy import files

    def dies(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        runs.save_run({"metrics": {}}, runs.run_path(CONFIGS[0]))
    assert list(runs.cache_dir().iterdir()) == []  # neither the run nor its temporary file


def test_failed_run_is_named_and_the_others_are_kept(trained):
    bad = CONFIGS[1].replace(lr=1e6)
    configs = [CONFIGS[0], bad, CONFIGS[2]]
    with pytest.raises(runs.SweepFailed) as info:
        runs.run_all(configs, progress=False)
    assert "1 of 3 runs failed" in str(info.value)
    assert f"seed=1 lr=1000000.0 (run {runs.run_key(bad)}): TrainingDiverged: loss is nan" in str(info.value)
    assert [cfg for cfg, _ in info.value.failures] == [bad]
    assert stored() == keys([CONFIGS[0], CONFIGS[2]])


def test_clear_and_the_clean_runs_command(trained, capsys):
    runs.run_all(CONFIGS, progress=False)
    (runs.cache_dir() / "x.pt123.tmp").write_bytes(b"partial")  # left by a killed write
    (runs.cache_dir() / "pretrained").mkdir()
    (runs.cache_dir() / "pretrained" / "p.pt").write_bytes(b"shared")
    assert main(["clean-runs"]) == 0
    assert "removed 8 files" in capsys.readouterr().out
    assert stored() == [] and runs.clear() == 0 and not list(runs.cache_dir().rglob("*.pt"))


def test_sweep_command_fills_the_cache_that_the_notebook_reads(trained, capsys):
    args = ["sweep", "tokens_collapse", "--profile", "smoke", "--workers", "1", "-p", "seed", "[0, 1]"]
    assert main(args) == 0
    configs = sweeps.plan("tokens_collapse", "smoke", {"seed": [0, 1]}).configs
    assert len(trained) == len(configs) == 8 and stored() == keys(configs)
    assert "8 runs: 0 from the cache, 8 computed" in capsys.readouterr().out
    runs.run_all(configs, progress=False)  # what the notebook does next (Chapter.runs): reads, trains nothing
    assert len(trained) == 8
    assert main(args) == 0
    assert "8 runs: 8 from the cache, 0 computed" in capsys.readouterr().out


def test_sweep_command_takes_a_notebook_path_and_reports_failures(trained, capsys):
    assert main(["sweep", "notebooks/tokens_collapse.ipynb", "--profile", "smoke", "-p", "lr", "1000000.0"]) == 1
    err = capsys.readouterr().err
    assert "4 of 4 runs failed" in err and "TrainingDiverged" in err


@pytest.mark.parametrize("args, message", [
    (["-p", "seeds", "[0]"], "unknown parameter 'seeds'"),
    (["-p", "seed", "0"], "parameter seed=0 has the wrong type"),
    (["-p", "total_steps", "-3"], "parameter total_steps=-3 is out of range: must be a positive integer"),
    (["--profile", "fast"], "parameter profile='fast' is not a profile"),
])
def test_sweep_command_refuses_bad_parameters_before_training(trained, capsys, args, message):
    assert main(["sweep", "tokens_collapse", *(["--profile", "smoke"] if "--profile" not in args else []), *args]) == 2
    assert message in capsys.readouterr().err and trained == []


def test_runs_sharing_a_pretraining_wait_for_the_first():
    pre = [Config(regime="pretrain", **{**TINY, "codebook_size": k}) for k in (8, 16, 32)]
    other_seed = pre[0].replace(seed=1)
    base = Config(regime="baseline", **TINY)
    ready, followers = runs.sharing_order([base, pre[0], pre[1], other_seed, pre[2]])
    assert ready == [pre[0], other_seed, base]  # the runs others wait for go first
    assert followers[runs.run_key(pre[0])] == [pre[1], pre[2]] and followers[runs.run_key(other_seed)] == []
    assert pretrain_key(pre[0]) == pretrain_key(pre[2]) != pretrain_key(other_seed)


def test_pretraining_is_trained_once_and_restored_identically_in_process(monkeypatch):
    puts, hits = [], []

    class CountingStore(runs.PretrainedStore):
        def put(self, key, state):
            puts.append(key)
            super().put(key, state)

        def get(self, key):
            found = super().get(key)
            hits.append(found is not None)
            return found

    monkeypatch.setattr(runs, "PretrainedStore", CountingStore)
    configs = [Config(regime="pretrain", **{**TINY, "codebook_size": k}) for k in (8, 16)]
    shared = runs.run_all(configs, progress=False, workers=1)
    assert len(puts) == 1 and hits == [False, True]
    assert len(list((runs.cache_dir() / "pretrained").glob("*.pt"))) == 1
    alone = runs.run_all(configs, use_cache=False, progress=False, workers=1)  # no store: each pretrains
    assert len(puts) == 1
    for s, a in zip(shared, alone):
        assert same(s["metrics"], a["metrics"]) and same(s["curves"], a["curves"])
        assert s["autoencoder_mse_at_vq_init"] == a["autoencoder_mse_at_vq_init"]
        assert torch.equal(s["final"]["tokens"], a["final"]["tokens"])


@pytest.mark.slow
def test_worker_processes_give_the_in_process_results_store_each_run_once_and_name_a_failed_one():
    """One pool (starting worker processes costs seconds): three good runs, two of them
    sharing a pretraining, one listed twice, and one that diverges."""
    configs = [Config(regime="baseline", **TINY)] + [Config(regime="pretrain", **{**TINY, "codebook_size": k})
                                                     for k in (8, 16)]
    bad = configs[0].replace(lr=1e6, seed=1)  # the loss overflows at once
    here = runs.run_all(configs, use_cache=False, progress=False, workers=1)  # nothing shared, nothing stored
    assert not runs.cache_dir().exists() or stored() == []
    with pytest.raises(runs.SweepFailed) as info:
        runs.run_all(configs + [bad] + configs[:1], progress=False, workers=2)
    assert "1 of 5 runs failed" in str(info.value)
    assert f"lr=1000000.0 (run {runs.run_key(bad)}): TrainingDiverged: loss is" in str(info.value)
    assert [cfg for cfg, _ in info.value.failures] == [bad]
    assert stored() == keys(configs)  # each good run once, the failed one never
    assert len(list((runs.cache_dir() / "pretrained").glob("*.pt"))) == 1  # the two pretrain runs shared one
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what the pool stored reads back as it was computed in this process
        pooled = [runs.load_run(runs.run_path(cfg), cfg) for cfg in configs]
    for p, h in zip(pooled, here):
        assert same(p["metrics"], h["metrics"]) and same(p["curves"], h["curves"])
        assert torch.equal(p["final"]["tokens"], h["final"]["tokens"])
