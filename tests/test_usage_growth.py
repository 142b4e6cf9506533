"""The *Usage as the codebook grows* chapter (notebooks/usage_growth.ipynb): GROW1
(vqstudy.findings.check_usage_growth) on hand-made run tables, each condition holding,
failing and exactly at its threshold, as tests/test_findings.py does for the other
findings; its figure (vqstudy.growth_plots); and the runs it shares with C3
(cifar10_scaling) at the quick profile, so that the run cache serves them."""

import dataclasses
import math

import matplotlib
import pandas as pd
import pytest

from vqstudy import findings, growth_plots, rules, runs, sweeps
from vqstudy.training import positions_per_example

matplotlib.use("Agg")

KS = (32, 128, 512, 2048, 8192, 16384)
SEEDS = (0, 1, 2)


@pytest.fixture(autouse=True)
def no_floating_point_spread(monkeypatch):
    """No committed floating-point spread reaches these tables: the outcomes are the data's alone."""
    monkeypatch.setattr(rules, "fp_spread", lambda root=None: {})


def growth_table(usage: dict, seeds=SEEDS) -> pd.DataFrame:
    """One row per (regime, K, seed): ``usage[regime][K]`` is a number (every seed) or a
    tuple (one per seed); perplexity is half the tokens in use (a share of K of usage / 2)."""
    rows = []
    for regime, by_k in usage.items():
        for k, u in by_k.items():
            for i, seed in enumerate(seeds):
                value = u[i] if isinstance(u, tuple) else u
                rows.append({"regime": regime, "codebook_size": k, "seed": seed, "usage": value,
                             "perplexity": value * k / 2})
    return pd.DataFrame(rows)


def holding() -> dict:
    """Baseline below half from K = 2048 on in the seed mean (seed 0 only from 8192);
    pretrain at least 90% everywhere."""
    return {"baseline": {32: 1.0, 128: 0.98, 512: 0.85, 2048: (0.55, 0.45, 0.33), 8192: (0.2, 0.16, 0.12),
                         16384: (0.1, 0.08, 0.06)},
            "pretrain": {32: 1.0, 128: 1.0, 512: 1.0, 2048: 1.0, 8192: 0.99, 16384: (0.95, 0.9, 0.97)}}


def test_grow1_holds_where_baseline_falls_below_half_and_pretrain_does_not():
    v = findings.check_usage_growth(growth_table(holding()))
    assert v.holds and v.claim == "GROW1" and v.role == "finding" and v.rule == findings.GROW1_RULE
    assert v.statement == findings.GROW_QUESTION and v.seeds == [0, 1, 2]
    falls, stays = v.conditions
    assert (falls.comparison, falls.threshold, falls.scope) == ("<", 0.5, "every seed")
    assert (stays.comparison, stays.threshold, stays.scope) == (">=", 0.5, "every seed")
    assert falls.values == pytest.approx({0: 0.1, 1: 0.08, 2: 0.06}) and falls.margin == pytest.approx(0.4)
    assert stays.values == pytest.approx({0: 0.95, 1: 0.9, 2: 0.97}) and stays.margin == pytest.approx(0.4)
    assert not falls.flips_without_seed and not stays.flips_without_seed
    n = v.numbers
    assert (n["k_min"], n["k_max"], n["threshold"]) == (32, 16384, 0.5)
    assert n["k_half_baseline"] == 2048 and n["k_half_baseline_text"] == "2048"   # seed mean 0.443 at 2048
    assert n["k_half_baseline_seeds"] == "seed 0: 8192, seed 1: 2048, seed 2: 2048"
    assert n["k_half_pretrain"] == 0 and n["k_half_pretrain_text"] == "none up to K = 16384"
    assert n["usage_baseline_kmax"] == pytest.approx(0.08) and n["usage_pretrain_kmax"] == pytest.approx(0.94)
    assert n["share_pretrain_16384"] == pytest.approx(0.47) and n["share_baseline_32"] == pytest.approx(0.5)
    assert n["lowest_baseline"] == pytest.approx(0.1) and n["lowest_pretrain"] == pytest.approx(0.9)
    assert "falls below 50% at K = 2048" in v.headline and "pretrain's does not" in v.headline
    assert "8.0% of baseline's tokens are in use and 94.0% of pretrain's" in v.headline
    assert "50%" in findings.GROW1_RULE and "every seed" in findings.GROW1_RULE


def test_grow1_fails_when_one_seed_of_baseline_keeps_half_its_tokens():
    usage = holding()
    for k in (2048, 8192, 16384):   # seed 1 never falls below half
        values = list(usage["baseline"][k])
        values[1] = 0.6
        usage["baseline"][k] = tuple(values)
    v = findings.check_usage_growth(growth_table(usage))
    falls = v.conditions[0]
    assert not v.holds and [c.holds for c in v.conditions] == [False, True]
    assert falls.deciding == pytest.approx(0.6) and falls.margin == pytest.approx(-0.1)
    assert falls.flips_without_seed == [1]
    assert v.numbers["k_half_baseline_seeds"] == "seed 0: 8192, seed 1: none, seed 2: 2048"


def test_grow1_fails_when_pretrain_falls_below_half_in_one_seed_at_one_k():
    usage = holding()
    usage["pretrain"][16384] = (0.95, 0.4, 0.97)
    v = findings.check_usage_growth(growth_table(usage))
    stays = v.conditions[1]
    assert not v.holds and [c.holds for c in v.conditions] == [True, False]
    assert stays.deciding == pytest.approx(0.4) and stays.margin == pytest.approx(-0.1)
    assert stays.flips_without_seed == [1]
    assert v.numbers["k_half_pretrain"] == 0   # the seed mean, 0.773, is not below half


def test_grow1_reports_where_pretrain_falls_below_half_in_the_seed_mean():
    usage = holding()
    usage["pretrain"][16384] = 0.3
    v = findings.check_usage_growth(growth_table(usage))
    assert not v.holds and v.numbers["k_half_pretrain"] == 16384 and "pretrain's at K = 16384" in v.headline


def test_grow1_at_its_thresholds():
    """Exactly half the tokens in use (0.5 is exact in floating point): baseline's strict
    "below half" fails with margin 0, pretrain's "at least half" holds with margin 0."""
    usage = holding()
    for k in (2048, 8192, 16384):   # seed 1's lowest baseline usage: exactly half
        values = list(usage["baseline"][k])
        values[1] = 0.5
        usage["baseline"][k] = tuple(values)
    usage["pretrain"][16384] = (0.95, 0.5, 0.97)
    v = findings.check_usage_growth(growth_table(usage))
    falls, stays = v.conditions
    assert falls.deciding == falls.threshold == 0.5 and falls.margin == 0 and not falls.holds
    assert stays.deciding == stays.threshold == 0.5 and stays.margin == 0 and stays.holds
    usage["pretrain"][16384] = (0.95, 0.4999999, 0.97)
    for k in (2048, 8192, 16384):
        values = list(usage["baseline"][k])
        values[1] = 0.4999999
        usage["baseline"][k] = tuple(values)
    v = findings.check_usage_growth(growth_table(usage))
    assert [c.holds for c in v.conditions] == [True, False]


def test_grow1_without_a_regime_or_with_a_missing_usage_does_not_hold():
    only_baseline = growth_table({"baseline": holding()["baseline"]})
    v = findings.check_usage_growth(only_baseline)
    assert [c.holds for c in v.conditions] == [True, False] and v.conditions[1].detail == "no pretrain runs"
    df = growth_table(holding())
    df.loc[(df.regime == "pretrain") & (df.seed == 2) & (df.codebook_size == 512), "usage"] = math.nan
    assert [c.holds for c in findings.check_usage_growth(df).conditions] == [True, False]
    empty = findings.check_usage_growth(growth_table({}).reindex(columns=["regime", "codebook_size", "seed",
                                                                          "usage", "perplexity"]))
    assert not empty.holds and len(empty.conditions) == 2


def test_the_figure_draws_both_regimes_the_threshold_and_the_other_settings_apart():
    df = growth_table(holding())
    df["perplexity_share"] = df.perplexity / df.codebook_size
    others = [{"label": "other setting: A (shape only)", "k": [512, 2048, 16384], "usage": [0.961, 0.29, 0.03]},
              {"label": "other setting: B (shape only)", "k": [4096, 8192, 16384], "usage": [1.0, 0.75, 0.97]}]
    fig = growth_plots.usage_figure(df, findings.GROW_HALF, others)
    usage_ax, share_ax = fig.axes[:2]
    labels = [line.get_label() for line in usage_ax.get_lines()]
    assert {"baseline", "pretrain", "other setting: A (shape only)", "other setting: B (shape only)"} <= set(labels)
    assert [line.get_label() for line in share_ax.get_lines()] == ["baseline", "pretrain"]   # other settings: usage only
    assert usage_ax.get_xscale() == "log" and usage_ax.get_ylim() == pytest.approx((-0.03, 1.03))
    other = next(line for line in usage_ax.get_lines() if line.get_label().startswith("other setting: A"))
    assert other.get_linestyle() == ":" and other.get_markerfacecolor() == "white"
    for band in usage_ax.collections + share_ax.collections:   # seed bands within 0–100%
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() >= 0 and ys.max() <= 1
    legend = fig.legends[0]
    assert any("other setting" in t.get_text() for t in legend.get_texts())


# --- the runs shared with C3 (cifar10_scaling) at quick ------------------------------------

def by_point(sweep) -> dict:
    return {(c.codebook_size, c.regime, c.seed): c for c in sweep.configs}


def test_quick_runs_at_c3_s_k_are_c3_s_own_and_only_k_16384_is_new():
    """Every run of C3 at quick is a run of this chapter with every setting equal (the
    same Config, so the same run-cache key), and the only runs it adds are K = 16384, both
    regimes, C3's seeds. Fails if either chapter's quick settings change apart."""
    ours, c3 = by_point(sweeps.plan("usage_growth", "quick")), by_point(sweeps.plan("cifar10_scaling", "quick"))
    assert set(c3) <= set(ours)
    for point, cfg in c3.items():
        assert ours[point] == cfg, (point, {f.name: (getattr(ours[point], f.name), getattr(cfg, f.name))
                                            for f in dataclasses.fields(cfg)
                                            if getattr(ours[point], f.name) != getattr(cfg, f.name)})
        assert runs.run_key(ours[point]) == runs.run_key(cfg)
    new = sorted(set(ours) - set(c3))
    seeds = sorted({s for _, _, s in c3})
    assert new == sorted((16384, regime, s) for regime in ("baseline", "pretrain") for s in seeds)


def test_k_16384_has_as_many_k_means_points_as_tokens():
    """C3's kmeans_samples (20000) covers K = 16384: its K-means gets at least K encoder
    outputs, fewer than two a token (the chapter says so)."""
    cfg = next(c for c in sweeps.plan("usage_growth", "quick").configs if c.codebook_size == 16384)
    assert cfg.validate() is cfg and cfg.kmeans_points() == 20000 >= 16384
    assert positions_per_example(cfg) == 64 and 50000 * 64 >= cfg.kmeans_samples
