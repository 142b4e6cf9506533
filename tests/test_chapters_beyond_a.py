"""The sweeps of two "Beyond the paper" chapters say what they mean at every profile:
codebook_init tries every initialiser of vqstudy.inits once, quantization_start's switch
labels are the share of total_steps they set, and each setting's label names its seed."""

import pytest

from vqstudy import inits, params, sweeps


@pytest.mark.parametrize("profile", params.PROFILES)
def test_codebook_init_tries_every_initialiser_once_and_the_reference(profile):
    sweep = sweeps.plan("codebook_init", profile)
    variants = sweep.params["initialisation"]
    baseline = [v["codebook_init"] for v in variants.values() if v["regime"] == "baseline"]
    assert sorted(baseline) == sorted(inits.METHODS)
    assert {name: v["codebook_init"] for name, v in variants.items() if v["regime"] == "baseline"} == \
        {m: m for m in inits.METHODS}  # a variant is named after its initialiser
    assert variants["pretrain+kmeans"] == {"regime": "pretrain", "codebook_init": "kmeans"}
    assert len(sweep.params["seed"]) >= (1 if profile == "smoke" else 3)


@pytest.mark.parametrize("profile", params.PROFILES)
def test_quantization_start_switch_labels_are_the_share_of_steps_they_set(profile):
    sweep = sweeps.plan("quantization_start", profile)
    total = sweep.params["total_steps"]
    for point, cfg in zip(sweep.points, sweep.configs):
        share = cfg.pretrain_steps / total if cfg.regime == "pretrain" else 0.0
        assert 100 * share == pytest.approx(float(point["switch"].rstrip("%")), abs=0.5), point
        assert (cfg.regime == "baseline") == (point["switch"] == "0%")
        data, seed = point["setting"].split("/")
        assert cfg.seed == int(seed) and cfg.data == {"synthetic": "gaussian_mixture", "cifar10": "cifar10"}[data]


def test_quantization_start_has_three_seeds_on_the_mixture_at_quick():
    sweep = sweeps.plan("quantization_start", "quick")
    seeds = {cfg.seed for cfg in sweep.configs if cfg.data == "gaussian_mixture"}
    assert len(seeds) >= 3


def test_provenance_takes_the_seeds_from_the_runs_when_settings_name_them():
    from vqstudy import provenance

    runs = [{"seconds": 1.0, "config": {"seed": 2}}, {"seconds": 1.0, "config": {"seed": 0}},
            {"seconds": 1.0, "config": {"seed": 2}}]
    assert provenance.collect({"profile": "quick"}, started=0.0, runs=runs)["seeds"] == [0, 2]
    assert provenance.collect({"profile": "quick", "seed": [5]}, started=0.0, runs=runs)["seeds"] == [5]
