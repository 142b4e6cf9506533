"""sweeps.plan: a chapter's profiles entry -> the runs it needs, every bad entry or value
refused with a message naming it. Entries are written to a temporary profiles.yml where a
case needs one the real file does not have."""

import dataclasses

import pytest
import yaml

from vqstudy import sweeps
from vqstudy.training import Config


def entries(tmp_path, **chapters):
    (tmp_path / "profiles.yml").write_text(yaml.safe_dump(chapters))
    return tmp_path


BASE = {"seed": [0, 1], "codebook_size": 16, "total_steps": 100, "pretrain_steps": 50}


def test_every_combination_of_the_swept_lists_in_sweep_order():
    plan = sweeps.plan("tokens_collapse", "smoke")
    assert plan.axes == ["codebook_size", "regime", "seed"]
    assert plan.points == [{"codebook_size": k, "regime": r, "seed": 0}
                           for k in (8, 32) for r in ("baseline", "pretrain")]
    assert [(c.codebook_size, c.regime, c.seed) for c in plan.configs] == [
        (p["codebook_size"], p["regime"], p["seed"]) for p in plan.points]
    for cfg in plan.configs:  # every parameter naming a Config field reaches the runs unchanged, and `fixed:`
        assert (cfg.total_steps, cfg.n_train_per_class, cfg.data, cfg.model) == (60, 100, "gaussian_mixture", "mlp")


def test_variants_set_their_fields_together_and_label_the_points():
    plan = sweeps.plan("embeddings_collapse", "smoke")
    assert plan.axes[0] == "mixture"
    assert len(plan.configs) == 2 * 2 * 2 * 1  # mixture x hidden x regime x seed
    for point, cfg in zip(plan.points, plan.configs):
        assert point["mixture"] in ("standard", "harder") and point["hidden"] == cfg.hidden
        expected = (3.0, 64) if point["mixture"] == "harder" else (8.0, 16)
        assert (cfg.separation, cfg.input_dim) == expected, point
    custom = sweeps.plan("embeddings_collapse", "smoke", {"mixture": {"wide": {"latent_dim": 4}}})
    assert {p["mixture"] for p in custom.points} == {"wide"} and {c.latent_dim for c in custom.configs} == {4}


def test_fixed_settings_reach_every_run(tmp_path):
    folder = entries(tmp_path, mine={"sweep": ["seed"], "fixed": {"regime": "pretrain", "latent_dim": 3},
                                     "defaults": BASE})
    plan = sweeps.plan("mine", "smoke", notebooks=folder)
    assert [c.seed for c in plan.configs] == [0, 1]
    assert all(c.regime == "pretrain" and c.latent_dim == 3 and c.codebook_size == 16 for c in plan.configs)
    # a parameter that is not a training setting changes no run
    folder = entries(tmp_path, mine={"sweep": ["seed"], "defaults": {**BASE, "caption": "x"}})
    assert {dataclasses.asdict(c)["seed"] for c in sweeps.plan("mine", "smoke", notebooks=folder).configs} == {0, 1}


def test_a_chapter_without_sweep_trains_nothing(tmp_path):
    folder = entries(tmp_path, prose={"defaults": {"caption": "x"}})
    plan = sweeps.plan("prose", "smoke", notebooks=folder)
    assert plan.configs == [] and plan.points == [] and plan.params == {"caption": "x", "profile": "smoke"}


@pytest.mark.parametrize("entry, message", [
    ({"sweep": ["seed"], "defaults": {**BASE, "hidden": [8, 16]}},
     "parameter hidden=[8, 16] is a list but not swept: add it to the `sweep:` of 'mine'"),
    ({"sweep": ["seed", "codebook_size"], "defaults": BASE},
     "parameter codebook_size=16 is swept, so it must be a list of values"),
    ({"sweep": ["seed", "width"], "defaults": BASE}, "sweep axis 'width' of notebook 'mine' is not one of its parameters"),
    ({"sweep": ["seed"], "fixed": {"widht": 3}, "defaults": BASE}, "`fixed:` of 'mine' names ['widht']"),
    ({"sweep": ["seed"], "fixed": {"total_steps": 3}, "defaults": BASE}, "`fixed:` of 'mine' names ['total_steps']"),
    ({"sweep": ["seed"], "fixed": {"regime": "warmup"}, "defaults": BASE}, "regime='warmup' is out of range"),
    ({"sweep": ["seed"], "smoke": {"seed": [0, -1]}, "defaults": BASE},
     "parameter seed=[0, -1] is out of range: -1 is not allowed, must be a non-negative integer"),
    ({"sweep": ["seed"]}, "the entry 'mine' of"),
])
def test_a_bad_profiles_entry_is_refused_naming_what_is_wrong(tmp_path, entry, message):
    with pytest.raises(ValueError) as err:
        sweeps.plan("mine", "smoke", notebooks=entries(tmp_path, mine=entry))
    assert message in str(err.value)


@pytest.mark.parametrize("notebook, overrides, message", [
    ("tokens_collapse", {"total_steps": -3}, "parameter total_steps=-3 is out of range: must be a positive integer"),
    ("tokens_collapse", {"codebook_size": [8, 0]},
     "parameter codebook_size=[8, 0] is out of range: 0 is not allowed, must be a positive integer"),
    ("tokens_collapse", {"pretrain_steps": 100},
     "parameter pretrain_steps=100 is out of range: must be between 1 and total_steps - 1 = 59 in the pretrain regime"),
    ("tokens_collapse", {"device": "tpu"}, "parameter device='tpu' is out of range: must be one of ['cpu', 'cuda', 'auto']"),
    ("tokens_collapse", {"lr": 0}, "parameter lr=0.0 is out of range: must be a positive number"),
    ("tokens_collapse", {"codebook_size": [8, 5000]}, "parameter codebook_size=[8, 5000] is out of range: 5000 is not"),
    ("embeddings_collapse", {"hidden": [2, 0]}, "parameter hidden=[2, 0] is out of range: 0 is not allowed"),
    ("embeddings_collapse", {"mixture": {"standard": {}, "harder": {"separation": -1.0}}},
     "parameter mixture: variant 'harder' sets separation=-1.0, which is out of range: must be a positive number"),
    ("embeddings_collapse", {"mixture": {"flat": {"latent_dim": 0}}},
     "parameter mixture: variant 'flat' sets latent_dim=0, which is out of range"),
    ("embeddings_collapse", {"mixture": {"typo": {"seprataion": 2.0}}},
     "parameter mixture: variant 'typo' sets ['seprataion'], which are not training settings"),
    ("embeddings_collapse", {"mixture": {"bad": 3}}, "parameter mixture={'bad': 3} has the wrong type"),
])
def test_an_out_of_range_value_names_the_parameter_as_the_user_set_it(notebook, overrides, message):
    with pytest.raises(ValueError) as err:
        sweeps.plan(notebook, "smoke", overrides)
    assert message in str(err.value)


def test_plan_is_what_the_runs_use():
    """The sweep command and the notebook build the same configs: plan is deterministic."""
    a, b = sweeps.plan("cifar10_scaling", "smoke"), sweeps.plan("cifar10_scaling", "smoke")
    assert a.configs == b.configs and all(isinstance(c, Config) for c in a.configs)
    assert {c.data for c in a.configs} == {"cifar10"}
