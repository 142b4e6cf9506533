"""The claim checks on small hand-made tables: for each check a table where every
condition holds, then for each condition a change that breaks exactly that one, and the
edge cases (a sweep without K >= 512, a single large K). Then the verdict file."""

import json

import pandas as pd
import pytest

from vqstudy import claims

SEEDS = (0, 1)


def table(axis: str, values: dict, seeds=SEEDS, **fixed) -> pd.DataFrame:
    """One row per (regime, seed, axis value): ``values[metric][regime][x]`` is a number
    (every seed) or a tuple (one number per seed)."""
    rows = []
    regimes = {r for by_regime in values.values() for r in by_regime}
    xs = sorted({x for by_regime in values.values() for by_x in by_regime.values() for x in by_x})
    for regime in sorted(regimes):
        for i, seed in enumerate(seeds):
            for x in xs:
                row = {"regime": regime, "seed": seed, axis: x, **fixed}
                for metric, by_regime in values.items():
                    v = by_regime[regime][x]
                    row[metric] = v[i] if isinstance(v, tuple) else v
                rows.append(row)
    return pd.DataFrame(rows)


def failing(verdict: claims.Verdict) -> list[int]:
    return [i for i, c in enumerate(verdict.conditions) if not c.holds]


def changed(values: dict, metric: str, regime: str, x, value) -> dict:
    out = {m: {r: dict(by_x) for r, by_x in by_regime.items()} for m, by_regime in values.items()}
    out[metric][regime][x] = value
    return out


# --- C1 ---------------------------------------------------------------------------------

C1 = {  # K = 8, 64, 512; at the largest K baseline collapses
    "perplexity": {"baseline": {8: 6.0, 64: 8.0, 512: 10.0}, "pretrain": {8: 7.0, 64: 40.0, 512: 400.0}},
    "usage": {"baseline": {8: 0.9, 64: 0.3, 512: 0.05}, "pretrain": {8: 1.0, 64: 0.9, 512: 0.8}},
    "codebook_spread": {"baseline": {8: 0.5, 64: 0.1, 512: 0.02}, "pretrain": {8: 0.6, 64: 0.7, 512: 0.8}},
    "mse": {"baseline": {8: 3.0, 64: 2.9, 512: 2.8}, "pretrain": {8: 2.5, 64: 2.0, 512: 1.5}},
}


def test_c1_holds_on_a_table_where_baseline_collapses_at_large_k():
    v = claims.check_tokens_collapse(table("codebook_size", C1))
    assert v.holds and v.outcome == "holds" and failing(v) == [] and len(v.conditions) == 6
    assert v.claim == "C1" and v.seeds == [0, 1] and v.rule == claims.C1_RULE
    assert v.numbers["k_max"] == 512 and v.numbers["ratio_at_kmax"] == pytest.approx(40.0)
    assert v.numbers["ratio_at_kmin"] == pytest.approx(7 / 6) and v.numbers["ratio_spearman"] == pytest.approx(1.0)
    assert v.numbers["usage_baseline"] == pytest.approx(0.05) and "5.0% of its tokens" in v.headline


@pytest.mark.parametrize("change, broken, name", [
    (("perplexity", "baseline", 512, (10.0, 500.0)), 0, "baseline has the lower perplexity"),
    (("usage", "baseline", 512, (0.95, 0.05)), 1, "baseline has the lower usage"),
    (("codebook_spread", "baseline", 512, (0.02, 0.9)), 2, "baseline has the lower codebook spread"),
    (("mse", "pretrain", 512, (1.5, 2.9)), 3, "pretrain has the lower MSE"),
    # ratio 50 at K=8 > 40 at K=512; with three K its rank correlation then cannot be positive either
    (("perplexity", "pretrain", 8, 300.0), [4, 5], "higher at the largest K"),
])
def test_c1_each_condition_fails_alone(change, broken, name):
    v = claims.check_tokens_collapse(table("codebook_size", changed(C1, *change)))
    broken = broken if isinstance(broken, list) else [broken]
    assert failing(v) == broken and not v.holds and v.outcome == "does not hold"
    assert name in v.conditions[broken[0]].name


def test_c1_ratio_must_also_rise_in_rank_not_only_at_the_ends():
    ks = (8, 16, 64, 256, 512)  # ratio 2, 50, 40, 30, 3: higher at the largest K than the smallest, rho = 0
    values = {"perplexity": {"baseline": {k: 10.0 for k in ks},
                             "pretrain": dict(zip(ks, (20.0, 500.0, 400.0, 300.0, 30.0)))},
              "usage": {"baseline": {k: 0.1 for k in ks}, "pretrain": {k: 0.9 for k in ks}},
              "codebook_spread": {"baseline": {k: 0.1 for k in ks}, "pretrain": {k: 0.9 for k in ks}},
              "mse": {"baseline": {k: 3.0 for k in ks}, "pretrain": {k: 2.0 for k in ks}}}
    v = claims.check_tokens_collapse(table("codebook_size", values))
    assert failing(v) == [5] and "rank correlation" in v.conditions[5].name
    assert v.conditions[5].deciding == 0.0 and v.conditions[5].margin == 0.0  # at the threshold: ρ > 0 fails


# --- C2 ---------------------------------------------------------------------------------

C2 = {  # widths 2..16, pretrain rows judged; baseline rows go the wrong way on purpose
    "probe_accuracy": {"pretrain": {2: 0.5, 4: 0.7, 8: 0.85, 16: 0.95}, "baseline": {2: 0.9, 4: 0.5, 8: 0.4, 16: 0.1}},
    "fisher_ratio": {"pretrain": {2: 0.5, 4: 1.0, 8: 2.0, 16: 4.0}, "baseline": {2: 4.0, 4: 2.0, 8: 1.0, 16: 0.5}},
    "mse": {"pretrain": {2: 4.0, 4: 3.0, 8: 2.0, 16: 1.0}, "baseline": {2: 1.0, 4: 2.0, 8: 3.0, 16: 4.0}},
}


def test_c2_holds_on_a_table_with_a_trend_over_widths_and_merged_classes_at_the_smallest():
    v = claims.check_embeddings_collapse(table("hidden", C2))
    assert v.holds and len(v.conditions) == 4 and v.claim == "C2" and v.rule == claims.C2_RULE
    assert v.numbers["w_min"] == 2 and v.numbers["w_max"] == 16 and v.numbers["rho_mse"] == pytest.approx(-1.0)
    assert v.numbers["probe_accuracy_wmin"] == pytest.approx(0.5) and "50.0% to 95.0%" in v.headline


@pytest.mark.parametrize("change, broken", [
    (("probe_accuracy", "pretrain", 4, (0.7, 0.97)), 0),  # seed 1: 0.5, 0.97, 0.85, 0.95 -> rho 0.4
    (("fisher_ratio", "pretrain", 4, (1.0, 9.0)), 1),
    (("mse", "pretrain", 4, (3.0, 0.5)), 2),
    (("probe_accuracy", "pretrain", 2, (0.5, 0.92)), 3),  # seed 1 does not merge at width 2 (trend intact)
])
def test_c2_each_condition_fails_alone(change, broken):
    values = changed(C2, *change)
    if broken == 3:  # keep the trend rising above the new smallest-width accuracy
        values = changed(values, "probe_accuracy", "pretrain", 4, (0.7, 0.93))
        values = changed(values, "probe_accuracy", "pretrain", 8, (0.85, 0.94))
    v = claims.check_embeddings_collapse(table("hidden", values))
    assert failing(v) == [broken], [c.name for c in v.conditions]


def test_c2_judges_a_trend_where_the_first_rule_saw_only_end_points():
    """End points rise, the middle does not: C2-v1 holds, C2 does not."""
    values = changed(C2, "probe_accuracy", "pretrain", 4, 0.95)
    values = changed(values, "probe_accuracy", "pretrain", 8, 0.6)
    values = changed(values, "probe_accuracy", "pretrain", 16, 0.7)  # 0.5, 0.95, 0.6, 0.7: rho 0.4
    df = table("hidden", values)
    assert claims.check_embeddings_collapse_v1(df).holds
    v = claims.check_embeddings_collapse(df)
    assert failing(v) == [0] and v.conditions[0].values == {0: pytest.approx(0.4), 1: pytest.approx(0.4)}
    assert v.conditions[0].margin == pytest.approx(-0.3)


def test_c2_with_a_claim_id_is_the_same_rule_under_another_name():
    df = table("hidden", changed(C2, "mse", "pretrain", 4, 0.5))
    v, h = claims.check_embeddings_collapse(df), claims.check_embeddings_collapse(df, "C2h", "Harder mixture")
    assert (h.claim, h.title, h.rule) == ("C2h", "Harder mixture", claims.C2_RULE)
    assert [c.holds for c in h.conditions] == [c.holds for c in v.conditions] and failing(h) == [2]


@pytest.mark.parametrize("change, broken", [
    (("probe_accuracy", "pretrain", 16, (0.95, 0.4)), 0),
    (("fisher_ratio", "pretrain", 16, (0.1, 4.0)), 1),
    (("mse", "pretrain", 16, (1.0, 5.0)), 2),
    (("probe_accuracy", "pretrain", 2, (0.91, 0.5)), 3),
])
def test_c2_first_rule_each_condition_fails_alone(change, broken):
    v = claims.check_embeddings_collapse_v1(table("hidden", changed(C2, *change)))
    assert failing(v) == [broken] and v.claim == "C2-v1" and v.role == "superseded"
    assert claims.check_embeddings_collapse_v1(table("hidden", C2)).holds


# --- C3 ---------------------------------------------------------------------------------

C3 = {  # K = 32 (ignored by the rules), 512, 2048, 8192: baseline flat, pretrain falls, its lead grows
    "perplexity": {"baseline": {32: 99.0, 512: 50.0, 2048: 60.0, 8192: 70.0},
                   "pretrain": {32: 1.0, 512: 300.0, 2048: 1000.0, 8192: 3000.0}},
    "usage": {"baseline": {32: 1.0, 512: 0.1, 2048: 0.03, 8192: 0.01},
              "pretrain": {32: 0.1, 512: 0.9, 2048: 0.8, 8192: 0.7}},
    "mse": {"baseline": {32: 0.01, 512: 0.04, 2048: 0.0399, 8192: 0.0398},
            "pretrain": {32: 0.09, 512: 0.035, 2048: 0.03, 8192: 0.025}},
    "dead_tokens": {"baseline": {32: 0, 512: 400, 2048: 2000, 8192: 8000},
                    "pretrain": {32: 0, 512: 50, 2048: 400, 8192: 2400}},
}

C3_BREAKS = {  # condition of C3a / C3-v1 -> a change that breaks it alone
    0: [("perplexity", "baseline", 2048, (60.0, 2000.0))],
    1: [("usage", "baseline", 8192, (0.9, 0.01))],
    2: [("mse", "pretrain", 512, (0.041, 0.035))],  # seed 0 only; the seed means still fall, the lead grows
    3: [("mse", "pretrain", 8192, 0.031), ("mse", "baseline", 8192, 0.05)],  # pretrain rises; its lead grows
}


def apply(values, changes):
    for change in changes:
        values = changed(values, *change)
    return values


def test_c3a_holds_on_a_table_where_pretrain_pulls_away():
    v = claims.check_cifar10_scaling(table("codebook_size", C3))
    assert v.holds and len(v.conditions) == 5 and v.claim == "C3a" and v.rule == claims.C3A_RULE
    assert v.numbers["k_max"] == 8192
    assert v.numbers["lead_at_512"] == pytest.approx(0.125) and v.numbers["lead_at_kmax"] == pytest.approx(1 - .025 / .0398)
    assert v.numbers["dead_tokens_baseline"] == 8000 and "37.2% below" in v.headline


@pytest.mark.parametrize("broken", [0, 1, 2, 3, 4])
def test_c3a_each_condition_fails_alone(broken):
    changes = C3_BREAKS.get(broken) or [  # 4: baseline falls faster than pretrain: the lead shrinks
        ("mse", "baseline", 2048, 0.032), ("mse", "baseline", 8192, 0.02), ("mse", "pretrain", 8192, 0.018)]
    v = claims.check_cifar10_scaling(table("codebook_size", apply(C3, changes)))
    assert failing(v) == [broken], [c.name for c in v.conditions]


def test_c3b_holds_when_baseline_gains_less_than_two_percent():
    v = claims.check_baseline_stops_improving(table("codebook_size", C3))
    assert v.holds and v.claim == "C3b" and v.rule == claims.C3B_RULE
    assert v.numbers["baseline_mse_gain"] == pytest.approx(0.005)
    for end, holds in ((0.04 * (1 - 0.019), True), (0.04 * (1 - 0.021), False), (0.03, False), (0.05, True)):
        v = claims.check_baseline_stops_improving(table("codebook_size", changed(C3, "mse", "baseline", 8192, end)))
        assert v.holds is holds, end
        assert "baseline's MSE stops improving" in v.conditions[0].name


@pytest.mark.parametrize("broken", [0, 1, 2, 3, 4])
def test_c3_first_rule_each_condition_fails_alone(broken):
    changes = C3_BREAKS.get(broken) or [("mse", "baseline", 8192, 0.03)]  # 4: baseline still improves 25%
    v = claims.check_cifar10_scaling_v1(table("codebook_size", apply(C3, changes)))
    assert failing(v) == [broken] and v.claim == "C3-v1" and v.role == "superseded"


@pytest.mark.parametrize("check, claim", [(claims.check_cifar10_scaling, "C3a"),
                                          (claims.check_baseline_stops_improving, "C3b"),
                                          (claims.check_cifar10_scaling_v1, "C3-v1")])
def test_c3_without_a_k_of_512_does_not_hold_and_says_why(check, claim):
    small = {m: {r: {k: v for k, v in by_k.items() if k < 512} | {128: by_k[32]} for r, by_k in by_r.items()}
             for m, by_r in C3.items()}
    v = check(table("codebook_size", small))
    assert v.claim == claim and not v.holds and v.numbers == {}
    assert [(c.name, c.detail) for c in v.conditions] == [("the sweep reaches K ≥ 512", "codebook sizes run: [32, 128]")]


def test_c3_with_one_large_k_cannot_show_a_trend():
    """The smoke profile's sweep (K = 32, 512): the trend conditions fail, they are not skipped."""
    one = {m: {r: {k: v for k, v in by_k.items() if k <= 512} for r, by_k in by_r.items()} for m, by_r in C3.items()}
    df = table("codebook_size", one)
    assert failing(claims.check_cifar10_scaling(df)) == [3, 4]
    assert failing(claims.check_baseline_stops_improving(df)) == [0]


# --- verdicts and their file -------------------------------------------------------------

def test_checklist_ticks_each_condition_with_its_numbers():
    v = claims.check_tokens_collapse(table("codebook_size", changed(C1, "mse", "pretrain", 512, (1.5, 2.9))))
    v.profile = "smoke"
    lines = v.checklist().splitlines()
    # it fails in seed 1 only: without seed 1 it would hold, so the verdict is fragile
    assert lines[0] == "**C1 does not hold, fragile** at profile `smoke`, seeds 0, 1: 5 of 6 conditions hold."
    assert lines[-1] == ("*Fragile: K=512: pretrain has the lower MSE in every seed, margin -0.1 (-0.101 seed "
                         "spreads).*")
    items = [line for line in lines if line.startswith("- ")]
    assert len(items) == 6
    crossed = [line for line in items if "pretrain has the lower MSE" in line]
    ticked = [line for line in items if line not in crossed]
    assert len({line[2] for line in ticked}) == 1 and crossed[0][2] != ticked[0][2]  # one mark for hold, another for fail
    assert "seed 1: baseline 2.800 vs pretrain 2.900" in crossed[0]


def test_verdicts_are_recorded_and_read_back_from_the_one_named_file(tmp_path):
    df = table("hidden", C2)
    verdicts = [claims.check_embeddings_collapse(df), claims.check_embeddings_collapse_v1(df)]
    for v in verdicts:
        v.profile, v.notebook = "smoke", "ch"
    assert claims.read(tmp_path, "ch") is None
    path = claims.record(verdicts, tmp_path, "ch")
    assert path == claims.verdict_path(tmp_path, "ch") == tmp_path / "ch.verdict.json"
    data = json.loads(path.read_text())
    assert data["notebook"] == "ch"
    back = claims.read(tmp_path, "ch")
    assert [(v["claim"], v["role"], v["holds"], v["profile"]) for v in back] == [
        ("C2", "claim", True, "smoke"), ("C2-v1", "superseded", True, "smoke")]
    assert back[0]["conditions"][0]["detail"] == verdicts[0].conditions[0].detail
    assert back[0]["numbers"] == pytest.approx(verdicts[0].numbers)


def test_an_unknown_role_is_refused(tmp_path):
    v = claims.check_embeddings_collapse(table("hidden", C2))
    v.role = "opinion"
    with pytest.raises(ValueError, match=r"verdict C2: role='opinion' is invalid: must be one of \['claim', 'finding', 'superseded'\]"):
        claims.record([v], tmp_path, "ch")
    assert claims.read(tmp_path, "ch") is None


def test_every_rule_change_names_recorded_claims():
    ids = {"C1", "C2", "C2-v1", "C3a", "C3b", "C3-v1"}
    for change in claims.RULE_CHANGES:
        assert change.old in ids and set(change.new) <= ids and change.why
