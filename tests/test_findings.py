"""The findings of the "Beyond the paper" chapters (vqstudy.findings) on small hand-made
tables: for every condition of every finding a table where it holds, one where it fails
and one exactly at its threshold (where ``>=`` and ``<=`` hold and ``>`` and ``<``
fail); then the helpers the chapters derive their columns with, the ties they report and
the ranking of the fixes."""

import math

import numpy as np
import pandas as pd
import pytest

from vqstudy import claims, findings, rules

SEEDS = (0, 1)


@pytest.fixture(autouse=True)
def no_floating_point_spread(monkeypatch):
    """No committed floating-point spread reaches these tables: the outcomes, margins and
    ties below are the data's alone."""
    monkeypatch.setattr(rules, "fp_spread", lambda root=None: {})


def table(by: str, axis: str, values: dict, seeds=SEEDS, **fixed) -> pd.DataFrame:
    """One row per (``by`` value, seed, ``axis`` value): ``values[metric][group][x]`` is a
    number (every seed) or a tuple (one number per seed); ``fixed`` columns are the same in
    every row."""
    rows = []
    groups = list(dict.fromkeys(g for by_group in values.values() for g in by_group))
    xs = sorted({x for by_group in values.values() for by_x in by_group.values() for x in by_x})
    for group in groups:
        for i, seed in enumerate(seeds):
            for x in xs:
                row = {by: group, "seed": seed, axis: x, **fixed}
                for metric, by_group in values.items():
                    v = by_group[group][x]
                    row[metric] = v[i] if isinstance(v, tuple) else v
                rows.append(row)
    return pd.DataFrame(rows)


def changed(values: dict, metric: str, group: str, x, value) -> dict:
    out = {m: {g: dict(by_x) for g, by_x in by_group.items()} for m, by_group in values.items()}
    out[metric][group][x] = value
    return out


def failing(verdict: claims.Verdict) -> list[int]:
    return [i for i, c in enumerate(verdict.conditions) if not c.holds]


def at_threshold(c: rules.Condition) -> bool:
    """The deciding value is the threshold itself."""
    return c.deciding == c.threshold and c.margin == 0


# --- Init1 and Init2 (codebook_init) -------------------------------------------------------

def init_table(usage: dict, share: dict, mismatch: dict | None = None, seeds=SEEDS) -> pd.DataFrame:
    """Initialisations at K = 8 and K = 32 (the rules read K = 32 only; at K = 8 every one
    avoids collapse) and the reference: ``usage[m]``, ``share[m]`` (perplexity share) and
    ``mismatch[m]`` (scale mismatch) at K = 32, a number or one per seed."""
    mismatch = mismatch or {m: float(i) for i, m in enumerate(usage)}
    ref = findings.INIT_REFERENCE
    values = {"usage": {m: {8: 1.0, 32: u} for m, u in usage.items()} | {ref: {8: 1.0, 32: 0.9}},
              "perplexity_share": {m: {8: 1.0, 32: s} for m, s in share.items()} | {ref: {8: 1.0, 32: 1.0}},
              "scale_mismatch": {m: {8: 0.0, 32: v} for m, v in mismatch.items()} | {ref: {8: 0.0, 32: 0.0}},
              "initial_usage": {m: {8: 0.5, 32: 0.1 * i} for i, m in enumerate([*usage, ref])},
              "initial_spread": {m: {8: 1.0, 32: float(i)} for i, m in enumerate([*usage, ref])}}
    df = table("initialisation", "codebook_size", values, seeds)
    df["perplexity"] = 100.0 * df.perplexity_share
    return df


def test_init1_holds_when_one_initialisation_avoids_collapse_in_every_seed():
    v = findings.check_avoids(init_table({"normal": 0.1, "kmeans": (0.8, 0.7)}, {"normal": 0.2, "kmeans": (0.9, 0.6)}))
    assert v.holds and v.claim == "Init1" and v.role == "finding" and v.rule == findings.INIT1_RULE
    c = v.conditions[0]
    assert (c.comparison, c.threshold, c.scope) == (">=", 1.0, "all seeds")
    assert c.deciding == pytest.approx(1.2) and c.margin == pytest.approx(0.2)  # kmeans, seed 1: share 0.6 / 0.5
    assert v.numbers["passing"] == "kmeans" and v.numbers["best"] == "kmeans" and v.numbers["n_avoid"] == 1
    assert v.numbers["k_max"] == 32 and v.numbers["usage_kmeans"] == pytest.approx(0.75)
    assert v.numbers["usage_pretrain_kmeans"] == pytest.approx(0.9) and "1 of 2 initialisations" in v.headline


@pytest.mark.parametrize("usage, share", [
    ({"normal": 0.1, "kmeans": (0.8, 0.4)}, {"normal": 0.2, "kmeans": 0.9}),   # usage below 50% in seed 1
    ({"normal": 0.1, "kmeans": 0.8}, {"normal": 0.2, "kmeans": (0.9, 0.3)}),   # perplexity share below 0.5 in seed 1
    # each avoids collapse in one seed: in every seed one does, but none in every seed
    ({"normal": (0.9, 0.1), "kmeans": (0.1, 0.9)}, {"normal": 0.9, "kmeans": 0.9}),
])
def test_init1_fails_when_no_initialisation_avoids_collapse_in_every_seed(usage, share):
    v = findings.check_avoids(init_table(usage, share))
    assert failing(v) == [0] and v.numbers["passing"] == "none" and v.conditions[0].margin < 0


def test_init1_at_its_threshold_holds():
    """Usage exactly 50% and perplexity share exactly 0.5: min(0.5 / 0.5, 0.5 / 0.5) = 1 >= 1."""
    v = findings.check_avoids(init_table({"normal": 0.1, "kmeans": (0.8, 0.5)}, {"normal": 0.2, "kmeans": (0.5, 0.9)}))
    assert v.holds and at_threshold(v.conditions[0])
    below = findings.check_avoids(init_table({"normal": 0.1, "kmeans": (0.8, 0.5)},
                                             {"normal": 0.2, "kmeans": (0.4999, 0.9)}))
    assert failing(below) == [0]


def test_init1_reads_the_largest_k_only_and_a_missing_usage_fails():
    df = init_table({"kmeans": 0.8}, {"kmeans": 0.9})
    assert findings.check_avoids(df).holds
    df.loc[(df.codebook_size == 32) & (df.initialisation == "kmeans") & (df.seed == 1), "usage"] = np.nan
    assert failing(findings.check_avoids(df)) == [0]


# ρ(scale mismatch, usage) over seven initialisations: exactly -0.8 in floating point
AT_MINUS_08 = ((2, 0, 4, 6, 1, 5, 6), (2, 4, 4, 0, 5, 3, 1))


def test_init2_holds_when_the_scale_mismatch_ranks_against_usage_in_every_seed():
    usage = {"normal": 0.1, "uniform": 0.2, "kmeans": 0.5, "gmm": 0.9}
    mismatch = {"normal": 3.0, "uniform": 2.0, "kmeans": 1.0, "gmm": 0.1}
    v = findings.check_property(init_table(usage, {m: 1.0 for m in usage}, mismatch))
    assert v.holds and v.claim == "Init2" and v.role == "finding" and v.rule == findings.INIT2_RULE
    c = v.conditions[0]
    assert (c.comparison, c.threshold, c.scope) == ("<=", -0.8, "every seed")
    assert c.values == {0: -1.0, 1: -1.0} and c.margin == pytest.approx(0.2)
    assert v.numbers["rho_mismatch_worst"] == -1.0 and v.numbers["rho_initial_spread"] == 1.0  # reported only
    assert "reported, not judged: ρ of the initial usage 1.00, 1.00" in c.detail


def test_init2_fails_when_one_seed_ranks_the_other_way():
    usage = {"normal": 0.1, "uniform": 0.2, "kmeans": 0.5, "gmm": 0.9}
    mismatch = {"normal": (3.0, 0.0), "uniform": (2.0, 1.0), "kmeans": (1.0, 2.0), "gmm": (0.1, 3.0)}
    v = findings.check_property(init_table(usage, {m: 1.0 for m in usage}, mismatch))
    assert failing(v) == [0] and v.conditions[0].values == {0: -1.0, 1: 1.0}
    assert v.conditions[0].flips_without_seed == [1] and v.numbers["rho_mismatch_worst"] == 1.0


def test_init2_at_its_threshold_holds():
    names = [f"init{i}" for i in range(7)]
    mismatch, usage = AT_MINUS_08
    v = findings.check_property(init_table({n: u / 10 for n, u in zip(names, usage)}, {n: 1.0 for n in names},
                                           {n: float(m) for n, m in zip(names, mismatch)}))
    assert v.holds and at_threshold(v.conditions[0]) and v.conditions[0].values == {0: -0.8, 1: -0.8}


# --- Start1 and Start2 (quantization_start) ------------------------------------------------

SWITCHES = (0.0, 25.0, 50.0, 75.0, 90.0)
MIXTURE, CIFAR = findings.START_DATASETS["gaussian_mixture"], findings.START_DATASETS["cifar10"]


def start_table(usage: dict | None = None, mse: dict | None = None, seeds=SEEDS) -> pd.DataFrame:
    """Both data sets at five switches: ``usage[dataset]`` and ``mse[dataset]`` a list over
    the switches (every seed) or a tuple of such lists (one per seed); by default usage
    rises with the switch and the MSE is lowest at 50%."""
    rising, valley = [0.1, 0.3, 0.5, 0.7, 0.9], [1.0, 0.6, 0.5, 0.6, 0.9]
    usage = {MIXTURE: rising, CIFAR: rising} | (usage or {})
    mse = {MIXTURE: valley, CIFAR: valley} | (mse or {})

    def per_switch(lists):
        return {d: {p: tuple(v[j] for v in lists[d]) if isinstance(lists[d], tuple) else lists[d][j]
                    for j, p in enumerate(SWITCHES)} for d in lists}

    df = table("dataset", "switch_percent", {"usage": per_switch(usage), "mse": per_switch(mse)}, seeds)
    df["switch"] = [f"{p:g}%" for p in df.switch_percent]
    df["autoencoder_mse"] = 0.4
    df["gap"] = df.mse - df.autoencoder_mse
    return df


def test_start1_holds_when_usage_rises_with_the_switch_in_every_seed():
    v = findings.check_shrinks(start_table())
    assert v.holds and v.claim == "Start1" and v.role == "finding" and len(v.conditions) == 2
    assert v.rule == findings.start1_rule(5) and "over the 5 switches" in v.rule
    c = v.conditions[0]
    assert (c.comparison, c.threshold, c.scope) == (">=", findings.START_RHO_MIN, "every seed")
    assert c.name.startswith("C1 mixture") and v.conditions[1].name.startswith("CIFAR-10")
    assert c.deciding == pytest.approx(1.0) and c.margin == pytest.approx(0.3)
    assert v.numbers["usage_first_synthetic"] == pytest.approx(0.1) and v.numbers["usage_last_cifar10"] == 0.9
    assert v.numbers["rho_cifar10_worst"] == pytest.approx(1.0)


def test_start1_fails_on_the_data_set_where_usage_falls_in_one_seed():
    v = findings.check_shrinks(start_table(usage={CIFAR: ([0.1, 0.3, 0.5, 0.7, 0.9], [0.9, 0.7, 0.5, 0.3, 0.1])}))
    assert failing(v) == [1] and v.conditions[1].values == {0: pytest.approx(1.0), 1: pytest.approx(-1.0)}
    assert v.numbers["rho_cifar10"] == pytest.approx(0.0) and v.numbers["rho_cifar10_worst"] == pytest.approx(-1.0)


def test_start1_at_its_threshold_holds():
    v = findings.check_shrinks(start_table(usage={MIXTURE: [0.1, 0.2, 0.5, 0.3, 0.4]}))  # ranks 1 2 5 3 4: ρ = 0.7
    assert v.holds and at_threshold(v.conditions[0]) and not at_threshold(v.conditions[1])


def test_start2_holds_when_the_lowest_mse_is_inside_in_every_seed():
    v = findings.check_optimum(start_table())
    assert v.holds and v.claim == "Start2" and v.role == "finding" and v.rule == findings.start2_rule("90%")
    c = v.conditions[0]
    assert (c.comparison, c.threshold, c.scope) == (">", 0.0, "every seed")
    # the lowest inside, 0.5 (at 50%), against the lowest of 0% and 90%, 0.9 (at 90%): (0.9 − 0.5) / 0.9
    assert c.deciding == pytest.approx(0.4 / 0.9) and c.margin == pytest.approx(0.4 / 0.9)
    assert "seed 0: lowest inside 0.5000 (at 50%), lowest at 0% or 90% 0.9000 (at 90%)" in c.detail
    assert v.numbers["best_synthetic"] == 50.0 and v.numbers["tied_synthetic"] == "50%"
    assert v.numbers["mse_zero_cifar10"] == 1.0 and v.numbers["gap_latest_cifar10"] == pytest.approx(0.5)


@pytest.mark.parametrize("mse, broken", [
    ({MIXTURE: ([0.4, 0.6, 0.5, 0.6, 0.9], [1.0, 0.6, 0.5, 0.6, 0.9])}, [0]),   # seed 0: lowest at 0%
    ({CIFAR: [1.0, 0.6, 0.5, 0.6, 0.45]}, [1]),                                  # lowest at the latest switch
])
def test_start2_fails_where_the_lowest_mse_is_at_an_end(mse, broken):
    v = findings.check_optimum(start_table(mse=mse))
    assert failing(v) == broken and v.conditions[broken[0]].margin < 0


def test_start2_at_its_threshold_fails():
    """The lowest inside ties with the latest switch: not strictly lower, 0 > 0 fails."""
    v = findings.check_optimum(start_table(mse={CIFAR: [1.0, 0.6, 0.5, 0.6, 0.5]}))
    assert failing(v) == [1] and at_threshold(v.conditions[1])


def test_start2_reports_the_switches_tied_with_the_lowest():
    """25% and 50% swap places between the seeds: their seed means are within noise, 75% is not."""
    v = findings.check_optimum(start_table(mse={MIXTURE: ([1.0, 0.50, 0.52, 0.6, 0.9], [1.0, 0.53, 0.50, 0.6, 0.9])}))
    assert v.holds and v.numbers["best_synthetic"] == 50.0
    assert v.numbers["tied_synthetic"] == "50%, 25%" and v.numbers["n_tied_synthetic"] == 2
    assert "tied with the lowest seed-mean MSE (reported, not judged): 50%, 25%" in v.conditions[0].detail
    assert "(tied: 50%, 25%)" in v.headline


# --- CAP (cifar10_capacity) ----------------------------------------------------------------

WIDTHS = (2, 4, 8, 16, 32)
CAP = {  # pretrain: separability rises and MSE falls with width; baseline the other way (not judged)
    findings.CAP_ACC: {"pretrain": dict(zip(WIDTHS, (0.2, 0.3, 0.4, 0.5, 0.6))),
                       "baseline": dict(zip(WIDTHS, (0.6, 0.5, 0.4, 0.3, 0.2)))},
    findings.CAP_FISHER: {"pretrain": dict(zip(WIDTHS, (0.1, 0.2, 0.3, 0.4, 0.5))),
                          "baseline": dict(zip(WIDTHS, (0.5, 0.4, 0.3, 0.2, 0.1)))},
    findings.CAP_RANK: {"pretrain": dict(zip(WIDTHS, (2.0,) * 5)), "baseline": dict(zip(WIDTHS, (1.0,) * 5))},
    "mse": {"pretrain": dict(zip(WIDTHS, (1.0, 0.8, 0.6, 0.4, 0.2))),
            "baseline": dict(zip(WIDTHS, (0.2, 0.4, 0.6, 0.8, 1.0)))},
}


def cap_with(metric: str, values, seeds=SEEDS) -> pd.DataFrame:
    """CAP's table with pretrain's ``metric`` over the widths replaced (a tuple of five
    numbers, or a pair of such tuples, one per seed)."""
    out = CAP
    for i, w in enumerate(WIDTHS):
        v = tuple(per_seed[i] for per_seed in values) if isinstance(values[0], tuple) else values[i]
        out = changed(out, metric, "pretrain", w, v)
    return table("regime", "hidden", out, seeds)


def test_cap_holds_on_a_table_where_separability_rises_and_mse_falls_with_width():
    v = findings.check_capacity(table("regime", "hidden", CAP))
    assert v.holds and v.claim == "CAP" and v.role == "finding" and v.rule == findings.CAP_RULE and len(v.conditions) == 4
    assert [(c.comparison, c.threshold) for c in v.conditions] == [(">=", 0.7), (">=", 0.7), ("<=", -0.7), (">=", 0.05)]
    assert v.conditions[3].deciding == pytest.approx(0.4) and v.numbers["gap_min"] == pytest.approx(0.4)
    assert v.numbers["w_min"] == 2 and v.numbers["acc_baseline_wmin"] == 0.6 and v.numbers["rho_mse"] == pytest.approx(-1.0)


@pytest.mark.parametrize("metric, values, broken", [
    (findings.CAP_ACC, ((0.2, 0.3, 0.4, 0.5, 0.6), (0.2, 0.6, 0.5, 0.3, 0.4)), 0),   # seed 1: ρ 0.1, still 20 points
    (findings.CAP_FISHER, ((0.1, 0.2, 0.3, 0.4, 0.5), (0.5, 0.4, 0.3, 0.2, 0.1)), 1),
    ("mse", ((1.0, 0.8, 0.6, 0.4, 0.2), (0.2, 0.4, 0.6, 0.8, 1.0)), 2),
    (findings.CAP_ACC, (0.2, 0.21, 0.22, 0.23, 0.24), 3),                            # a trend, but 4 points only
])
def test_cap_each_condition_fails_alone(metric, values, broken):
    assert failing(findings.check_capacity(cap_with(metric, values))) == [broken]


@pytest.mark.parametrize("metric, values, condition", [
    (findings.CAP_ACC, (0.2, 0.3, 0.6, 0.4, 0.5), 0),       # ranks 1 2 5 3 4: ρ = 0.7
    (findings.CAP_FISHER, (0.1, 0.2, 0.5, 0.3, 0.4), 1),
    ("mse", (0.6, 1.0, 0.8, 0.4, 0.2), 2),                   # ranks 3 5 4 2 1: ρ = -0.7
    (findings.CAP_ACC, (0.11, 0.12, 0.13, 0.14, 0.16), 3),  # 0.16 − 0.11 is 0.05 in floating point
])
def test_cap_each_condition_at_its_threshold_holds(metric, values, condition):
    v = findings.check_capacity(cap_with(metric, values))
    assert v.holds and at_threshold(v.conditions[condition])


# --- TOK1 and TOK2 (token_probe) -----------------------------------------------------------

def tok_table(probes: dict | None = None, seeds=SEEDS) -> pd.DataFrame:
    """Both data sets at K = 8 and 32, both regimes: ``probes[(dataset, regime, K)] =
    (tokens, embeddings)``, each a number or one per seed. By default pretrain's tokens read
    2 points less than its embeddings and 40 points more than baseline's."""
    base = {(d, r, k): ((0.88, 0.9) if r == "pretrain" else (0.48, 0.9))
            for d in findings.TOK_DATASETS for r in ("baseline", "pretrain") for k in (8, 32)}
    base.update(probes or {})
    parts = []
    for dataset in findings.TOK_DATASETS:
        values = {findings.TOKEN: {}, findings.QUANTIZED: {}, findings.EMBEDDING: {}}
        for (d, regime, k), (token, embedding) in base.items():
            if d == dataset:
                values[findings.TOKEN].setdefault(regime, {})[k] = token
                values[findings.QUANTIZED].setdefault(regime, {})[k] = 0.5
                values[findings.EMBEDDING].setdefault(regime, {})[k] = embedding
        parts.append(table("regime", "codebook_size", values, seeds, dataset=dataset))
    return pd.concat(parts, ignore_index=True)


def test_tok1_holds_when_the_tokens_lose_little_against_the_embeddings():
    v = findings.check_tokens_keep_the_class(tok_table())
    assert v.holds and v.claim == "TOK1" and v.role == "finding" and v.rule == findings.TOK1_RULE
    assert [(c.comparison, c.threshold, c.scope) for c in v.conditions] == [("<=", 0.05, "every seed")] * 2
    assert v.conditions[0].deciding == pytest.approx(0.02) and v.numbers["mixture_max_loss"] == pytest.approx(0.02)
    assert v.numbers["cifar10_kmax_pretrain_token"] == 0.88 and v.numbers["k_min"] == 8


def test_tok1_fails_on_the_data_set_where_one_run_loses_more():
    v = findings.check_tokens_keep_the_class(tok_table({("cifar10", "pretrain", 8): ((0.88, 0.8), 0.9)}))
    assert failing(v) == [1] and v.conditions[1].values == {0: pytest.approx(0.02), 1: pytest.approx(0.1)}


def test_tok1_at_its_threshold_holds_and_reads_the_pretrain_regime_only():
    v = findings.check_tokens_keep_the_class(tok_table({("mixture", "pretrain", 32): (0.11, 0.16),
                                                        ("mixture", "baseline", 32): (0.0, 0.9)}))
    assert v.holds and at_threshold(v.conditions[0])


def test_tok2_holds_when_pretrains_tokens_read_more_at_the_largest_k():
    v = findings.check_collapse_costs_the_class(tok_table({("cifar10", "baseline", 8): (0.99, 0.9)}))  # K = 8: not read
    assert v.holds and v.claim == "TOK2" and v.role == "finding" and v.rule == findings.TOK2_RULE
    assert [(c.comparison, c.threshold) for c in v.conditions] == [(">", 0.0)] * 2
    assert v.conditions[0].deciding == pytest.approx(0.4) and v.numbers["mixture_lead_min"] == pytest.approx(0.4)
    assert "K=32" in v.conditions[1].name


def test_tok2_fails_on_the_data_set_where_baseline_reads_more_in_one_seed():
    v = findings.check_collapse_costs_the_class(tok_table({("cifar10", "baseline", 32): ((0.48, 0.95), 0.9)}))
    assert failing(v) == [1] and v.conditions[1].flips_without_seed == [1]


def test_tok2_at_its_threshold_fails():
    """The same accuracy in both regimes: not more accurate, 0 > 0 fails."""
    v = findings.check_collapse_costs_the_class(tok_table({("mixture", "baseline", 32): (0.88, 0.9)}))
    assert failing(v) == [0] and at_threshold(v.conditions[0])


# --- Fixes (vq_fixes) ----------------------------------------------------------------------

FIX = findings.PAPER_FIX
FIXES = {  # one data set and K: the paper's fix avoids collapse with the lowest MSE; vq collapses
    "usage": {"vq": {16: 0.1}, FIX: {16: 0.8}, "rotation": {16: 0.9}, "fsq": {16: 0.95}},
    "mse": {"vq": {16: 2.0}, FIX: {16: 1.0}, "rotation": {16: 1.2}, "fsq": {16: 1.5}},
    "step_ms": {"vq": {16: 1.0}, FIX: {16: 2.0}, "rotation": {16: 3.0}, "fsq": {16: 4.0}},
}


def fixes_table(values: dict = FIXES, seeds=SEEDS, data: str = "C1's data", key: str = "synthetic") -> pd.DataFrame:
    return findings.with_ratios(table("method", "K", values, seeds, data=data, key=key))


def fixes_with(method: str, metric: str, value) -> pd.DataFrame:
    return fixes_table(changed(FIXES, metric, method, 16, value))


def test_fixes_holds_when_the_paper_fix_avoids_collapse_with_the_lowest_mse():
    v = findings.check_fixes(fixes_table())
    assert v.holds and v.claim == "Fixes" and v.role == "finding" and v.rule == findings.FIXES_RULE
    usage, mse = v.conditions
    assert (usage.comparison, usage.threshold, usage.scope) == (">=", 0.5, "every seed")
    assert (mse.comparison, mse.threshold, mse.scope) == ("<=", 0.05, "all seeds")
    assert usage.deciding == 0.8 and mse.deciding == 0.0 and mse.margin == 0.05
    n = v.numbers
    assert (n["synthetic_k"], n["synthetic_n_avoid"], n["synthetic_n_methods"]) == (16, 3, 4)
    assert n["synthetic_best"] == FIX and n["synthetic_fix_rank"] == "1" and n["synthetic_collapsing"] == "vq"
    assert n["synthetic_avoiding"] == "pretrain+vq, rotation, fsq" and n["synthetic_time_best"] == 2.0


def test_fixes_first_condition_fails_when_the_fix_collapses_in_one_seed():
    """The second condition is then not judged (the fix must avoid collapse for it) and fails too."""
    v = findings.check_fixes(fixes_with(FIX, "usage", (0.8, 0.4)))
    assert failing(v) == [0, 1] and v.conditions[0].values == {0: 0.8, 1: 0.4}
    assert math.isnan(v.conditions[1].deciding) and "does not avoid collapse" in v.conditions[1].detail
    assert v.numbers["synthetic_fix_rank"].startswith("–")


def test_fixes_first_condition_at_its_threshold_holds():
    v = findings.check_fixes(fixes_with(FIX, "usage", (0.8, 0.5)))
    assert v.holds and at_threshold(v.conditions[0])


def test_fixes_second_condition_fails_when_a_method_that_avoids_collapse_is_more_than_5_percent_better():
    v = findings.check_fixes(fixes_with("rotation", "mse", 0.9))
    assert failing(v) == [1] and v.conditions[1].deciding == pytest.approx(1 / 0.9 - 1)
    assert v.numbers["synthetic_best"] == "rotation" and v.numbers["synthetic_fix_rank"] == "2"


def test_fixes_second_condition_ignores_a_method_that_collapses():
    v = findings.check_fixes(fixes_with("vq", "mse", 0.5))  # lower MSE, but 10% of its tokens in use
    assert v.holds and v.conditions[1].deciding == 0.0


def test_fixes_second_condition_at_its_threshold_holds():
    """The fix's MSE 1.05 against the lowest, 1.0: exactly 5% above (the rule's arithmetic,
    1.05 <= (1 + 0.05) * 1.0), and the next float above fails."""
    values = changed(changed(FIXES, "mse", "rotation", 16, 1.0), "mse", FIX, 16, 1.05)
    v = findings.check_fixes(fixes_table(values))
    assert v.holds and at_threshold(v.conditions[1])
    above = findings.check_fixes(fixes_table(changed(values, "mse", FIX, 16, float(np.nextafter(1.05, 2)))))
    assert failing(above) == [1] and above.conditions[1].deciding > 0.05


def test_fixes_judges_each_data_set_and_k_and_quotes_each_data_sets_largest_k():
    parts = [fixes_table(), fixes_table(changed(FIXES, "mse", "rotation", 16, 0.5), data="CIFAR-10", key="cifar10")]
    v = findings.check_fixes(pd.concat(parts, ignore_index=True))
    assert failing(v) == [3] and [c.name.split(":")[0] for c in v.conditions] == \
        ["C1's data, K=16", "C1's data, K=16", "CIFAR-10, K=16", "CIFAR-10, K=16"]
    assert v.numbers["cifar10_best"] == "rotation" and v.numbers["synthetic_best"] == FIX


def test_fixes_leaves_out_a_seed_without_a_usage_as_avoiding_collapse_reads_it():
    df = fixes_with(FIX, "usage", (0.8, float("nan")))
    v = findings.check_fixes(df)
    assert v.holds and v.conditions[0].values == {0: 0.8} and findings.avoiding(df) == [FIX, "rotation", "fsq"]


def test_fixes_ranking_shows_the_methods_tied_with_the_best_as_tied():
    """rotation and the fix swap places between the seeds (within noise of each other); fsq is
    clearly worse; vq collapses."""
    values = changed(changed(FIXES, "mse", FIX, 16, (1.0, 1.02)), "mse", "rotation", 16, (1.03, 0.995))
    df = fixes_table(values)
    ranking = findings.ranking(df)
    assert ranking.to_dict("list") == {"method": [FIX, "rotation", "fsq", "vq"], "avoids": [True, True, True, False],
                                       "tied": [True, True, False, False], "rank": ["1=", "1=", "3", "–"]}
    v = findings.check_fixes(df)
    assert v.numbers["synthetic_tied"] == "pretrain+vq, rotation" and v.numbers["synthetic_fix_rank"] == "1="
    assert "tied with it: pretrain+vq, rotation" in v.conditions[1].detail and "tied with rotation" in v.headline


def test_fixes_ranking_ties_exactly_equal_results_with_one_seed():
    """One seed: no spread to be within, yet two methods with the same MSE share rank 1=."""
    df = fixes_table(changed(FIXES, "mse", "rotation", 16, 1.0), seeds=(0,))
    assert findings.ranking(df)["rank"].tolist() == ["1=", "1=", "3", "–"]
    assert findings.tied(df) == [FIX, "rotation"]


# --- helpers -------------------------------------------------------------------------------

def test_perplexity_share_is_each_runs_perplexity_over_the_references_in_the_same_k_and_seed():
    df = pd.DataFrame({"initialisation": ["a", findings.INIT_REFERENCE, "a", findings.INIT_REFERENCE],
                       "codebook_size": [8, 8, 8, 8], "seed": [0, 0, 1, 1], "perplexity": [2.0, 8.0, 3.0, 4.0]})
    assert findings.perplexity_share(df).tolist() == [0.25, 1.0, 0.75, 1.0]


def test_with_ratios_divides_by_the_paper_fix_and_the_baseline_of_the_same_seed():
    df = fixes_table(changed(FIXES, "step_ms", "vq", 16, (1.0, 4.0)))
    rotation = df[df.method == "rotation"]
    assert rotation.mse_vs_fix.tolist() == [1.2, 1.2] and rotation.time_vs_baseline.tolist() == [3.0, 0.75]


def test_the_rules_texts_are_built_from_the_thresholds():
    assert "at least 50% of its tokens in use" in findings.INIT1_RULE and "at most -0.8" in findings.INIT2_RULE
    assert "at least 0.7" in findings.start1_rule(7) and "(90%)" in findings.start2_rule("90%")
    assert "at least 5 points below" in findings.CAP_RULE and "at most 5 accuracy points" in findings.TOK1_RULE
    assert "at most 5% above" in findings.FIXES_RULE and "1=" in findings.FIXES_RANKING
    assert findings.key("kmeans++") == "kmeanspp" and findings.key("pretrain+kmeans") == "pretrain_kmeans"
