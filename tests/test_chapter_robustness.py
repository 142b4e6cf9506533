"""The cifar10_robustness chapter's finding (R3, "What could explain C3b") on hand-made
run tables: each setting is judged by C3's own checks on its own runs (or on the pair the
chapter names), and R3's conditions are those checks' C3b outcomes with their numbers."""

import pandas as pd
import pytest

from vqstudy import claims

KS = (512, 2048, 8192)


def runs(setting: str, baseline: tuple, pretrain: tuple, seeds=(0,)) -> pd.DataFrame:
    """One row per run: test MSE per K (``baseline``, ``pretrain``: one value per K in
    KS), pretrain using more tokens than baseline; seed s adds 0.001 * s to every MSE."""
    rows = []
    for seed in seeds:
        for regime, mses in (("baseline", baseline), ("pretrain", pretrain)):
            for k, mse in zip(KS, mses):
                used = 0.2 if regime == "baseline" else 0.9
                rows.append({"setting": setting, "regime": regime, "seed": seed, "codebook_size": k,
                             "mse": mse + 0.001 * seed, "perplexity": used * k / 2, "usage": used,
                             "dead_tokens": int((1 - used) * k)})
    return pd.DataFrame(rows)


IMPROVING = runs("reference", baseline=(0.20, 0.18, 0.17), pretrain=(0.15, 0.12, 0.10))  # baseline -15%
FLAT = runs("longer", baseline=(0.10, 0.0995, 0.099), pretrain=(0.08, 0.07, 0.06))         # baseline -1%
PAIRED = runs("equal_vq_steps", baseline=(0.19, 0.17, 0.16), pretrain=(0.14, 0.11, 0.09))


def test_finding_holds_when_c3b_fails_in_every_setting_and_says_by_how_much():
    tables = claims.setting_tables(pd.concat([IMPROVING, PAIRED]))
    v = claims.check_c3b_explanations(tables)
    assert v.holds and v.claim == "R3" and v.role == "finding" and v.rule == claims.R3_RULE
    assert [c.name for c in v.conditions] == [
        "reference: C3b does not hold (baseline's MSE still falls with K)",
        "equal_vq_steps: C3b does not hold (baseline's MSE still falls with K)"]
    assert v.numbers["reference_baseline_mse_gain"] == pytest.approx(0.15)
    assert v.numbers["reference_lead_at_kmax"] == pytest.approx(1 - 0.10 / 0.17)
    assert "15.0% lower at K=8192 than at K=512" in v.conditions[0].detail
    assert "C3a holds (5 of 5 conditions)" in v.conditions[0].detail
    assert "still falls from K = 512 to the largest K, by 15.0% to 15.8%" in v.headline


def test_a_setting_where_baseline_stops_improving_is_named_and_fails_the_finding():
    tables = claims.setting_tables(pd.concat([IMPROVING, FLAT]))
    v = claims.check_c3b_explanations(tables)
    assert not v.holds
    assert [c.holds for c in v.conditions] == [True, False]
    assert "1.0% lower at K=8192" in v.conditions[1].detail
    assert v.numbers["longer_c3b"] == "holds" and v.numbers["reference_c3b"] == "does not hold"
    assert v.headline.startswith("C3b holds under longer (baseline's MSE 1.0% lower at K = 8192 than at K = 512)")


def test_conditions_are_the_c3_checks_on_each_settings_own_runs():
    tables = claims.setting_tables(pd.concat([IMPROVING, FLAT, PAIRED]))
    v = claims.check_c3b_explanations(tables)
    for condition, (name, table) in zip(v.conditions, tables.items()):
        c3b = claims.check_baseline_stops_improving(table)
        c3a = claims.check_cifar10_scaling(table)
        assert condition.holds is (not c3b.holds), name
        assert f"C3a {c3a.outcome}" in condition.detail
        assert v.numbers[f"{name}_baseline_mse_gain"] == pytest.approx(c3b.numbers["baseline_mse_gain"])


def test_pairing_takes_the_other_settings_baseline_runs():
    df = pd.concat([IMPROVING, FLAT, PAIRED])
    tables = claims.setting_tables(df, {"equal_vq_steps": "reference"})
    paired = tables["equal_vq_steps"]
    assert sorted(paired.setting.unique()) == ["equal_vq_steps", "reference"]
    assert (paired[paired.regime == "baseline"].setting == "reference").all()
    assert paired[paired.regime == "baseline"].mse.tolist() == [0.20, 0.18, 0.17]
    assert paired[paired.regime == "pretrain"].mse.tolist() == [0.14, 0.11, 0.09]
    assert tables["longer"].equals(FLAT.reset_index(drop=True))  # the others keep their own runs
    unpaired = claims.check_c3b_explanations(claims.setting_tables(df))
    v = claims.check_c3b_explanations(tables)
    assert v.numbers["equal_vq_steps_lead_at_kmax"] == pytest.approx(1 - 0.09 / 0.17)
    assert unpaired.numbers["equal_vq_steps_lead_at_kmax"] == pytest.approx(1 - 0.09 / 0.16)


@pytest.mark.parametrize("pairs, bad", [({"equal_vq_steps": "reference"}, "equal_vq_steps"),
                                        ({"reference": "baseline_runs"}, "baseline_runs")])
def test_pairing_with_a_setting_that_was_not_run_names_it(pairs, bad):
    with pytest.raises(ValueError, match=f"names setting '{bad}', which was not run; settings run: "
                                         r"\['reference'\]"):
        claims.setting_tables(IMPROVING, pairs)


def test_a_setting_with_one_large_k_is_not_judged_and_fails_the_finding():
    one = IMPROVING[IMPROVING.codebook_size <= 512]
    v = claims.check_c3b_explanations({"reference": one})
    assert not v.holds
    assert v.conditions[0].detail == "not judged: the runs reach K ≥ 512 at fewer than two codebook sizes"


def test_outcomes_per_seed_then_on_the_seed_means():
    two = pd.concat([runs("reference", (0.20, 0.18, 0.17), (0.15, 0.12, 0.10), seeds=(0, 1)),
                     runs("longer", (0.10, 0.0995, 0.099), (0.08, 0.07, 0.06), seeds=(0, 1))])
    out = claims.c3_by_setting(claims.setting_tables(two))
    assert out[["setting", "seed"]].values.tolist() == [["reference", "0"], ["reference", "1"],
                                                        ["reference", "0, 1 (means)"],
                                                        ["longer", "0"], ["longer", "1"], ["longer", "0, 1 (means)"]]
    assert out.C3b.tolist() == ["does not hold"] * 3 + ["holds"] * 3
    seed1 = two[(two.setting == "reference") & (two.seed == 1)]
    assert out.baseline_mse_gain[1] == pytest.approx(
        claims.check_baseline_stops_improving(seed1).numbers["baseline_mse_gain"])
    assert out.baseline_mse_gain[1] == pytest.approx(1 - 0.171 / 0.201)
    one = claims.c3_by_setting(claims.setting_tables(IMPROVING))
    assert one.seed.tolist() == ["0"]  # one seed: no separate row of means
