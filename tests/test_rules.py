"""The one form of a condition (vqstudy.rules): a statistic, a comparison and a threshold,
with its margin, seed spread, leave-one-seed-out and floating-point fragility; ties."""

import pandas as pd
import pytest

from vqstudy import rules

NO_FP = {}  # no floating-point spread: those tests leave it out


def seeds_table(values: dict, column: str = "mse") -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, column: v} for s, v in values.items()])


def value(t: pd.DataFrame) -> float:
    return float(t.mse.mean())


@pytest.mark.parametrize("comparison, threshold, holds, margin", [
    (">=", 0.5, True, 0.0), (">", 0.5, False, 0.0), ("<=", 0.5, True, 0.0), ("<", 0.5, False, 0.0),
    (">=", 0.4, True, 0.1), ("<", 0.4, False, -0.1),
])
def test_a_condition_at_and_beside_its_threshold(comparison, threshold, holds, margin):
    c = rules.condition("c", seeds_table({0: 0.5, 1: 0.5}), value, comparison, threshold, spread=NO_FP)
    assert c.holds is holds and c.margin == pytest.approx(margin) and c.deciding == 0.5


def test_every_seed_is_decided_by_the_worst_seed_with_the_spread_over_seeds():
    c = rules.condition("c", seeds_table({0: 0.9, 1: 0.8, 2: 0.7}), value, ">", 0.6, what="accuracy", spread=NO_FP)
    assert c.holds and c.deciding == pytest.approx(0.7) and c.margin == pytest.approx(0.1)
    assert c.spread == pytest.approx(0.1) and c.margin_in_spreads == pytest.approx(1.0)
    assert c.values == {0: 0.9, 1: 0.8, 2: 0.7} and c.flips_without_seed == [] and not c.fragile
    assert "accuracy > 0.6 in every seed: seed 0 0.9, seed 1 0.8, seed 2 0.7" in c.detail


def test_a_condition_failing_in_one_seed_flips_without_it_and_is_fragile():
    c = rules.condition("c", seeds_table({0: 0.9, 1: 0.5, 2: 0.8}), value, ">", 0.6, spread=NO_FP)
    assert not c.holds and c.flips_without_seed == [1] and c.fragile
    assert c.margin == pytest.approx(-0.1) and "flips without seed 1" in c.margin_text()
    two = rules.condition("c", seeds_table({0: 0.5, 1: 0.5, 2: 0.8}), value, ">", 0.6, spread=NO_FP)
    assert not two.holds and two.flips_without_seed == [] and not two.fragile  # two seeds fail: no single one


def test_a_statistic_of_all_seeds_is_recomputed_without_each_seed():
    # seed means 0.1, 0.1, 0.4 -> mean 0.2 > 0.15; without seed 2 the mean is 0.1
    c = rules.condition("c", seeds_table({0: 0.1, 1: 0.1, 2: 0.4}), value, ">", 0.15, scope="all seeds",
                        spread=NO_FP)
    assert c.holds and c.values == {"all": pytest.approx(0.2)} and c.flips_without_seed == [2] and c.fragile
    assert c.spread == pytest.approx(pd.Series([0.1, 0.1, 0.4]).std())


def test_floating_point_noise_flips_a_condition_on_its_threshold_and_not_one_far_from_it():
    spread = {"mse": 0.01}
    near = rules.condition("c", seeds_table({0: 1.001, 1: 1.002}), value, ">", 1.0, spread=spread)
    assert near.holds and near.flips_under_fp is True and near.fragile and 0 < near.fp_range <= 0.0101
    far = rules.condition("c", seeds_table({0: 1.5, 1: 1.6}), value, ">", 1.0, spread=spread)
    assert far.holds and far.flips_under_fp is False and not far.fragile
    unmeasured = rules.condition("c", seeds_table({0: 1.5, 1: 1.6}), value, ">", 1.0, spread=NO_FP)
    assert unmeasured.flips_under_fp is None and unmeasured.fp_range is None


def test_a_table_column_is_matched_to_the_metric_whose_spread_it_gets():
    spread = {"mse": 0.1, "probe_accuracy": 0.2, "perplexity": 0.3}
    assert rules.fp_metric("mse", spread) == "mse" and rules.fp_metric("autoencoder_mse", spread) == "mse"
    assert rules.fp_metric("probe_token_accuracy", spread) == "probe_accuracy"
    assert rules.fp_metric("pooled_probe_accuracy", spread) == "probe_accuracy"
    assert rules.fp_metric("perplexity_share", spread) == "perplexity"
    assert rules.fp_metric("seconds", spread) is None and rules.fp_metric("hidden", spread) is None


def test_bad_comparisons_and_scopes_are_refused_naming_what_is_allowed():
    with pytest.raises(ValueError, match=r"comparison='=>' is invalid: must be one of \['>=', '>', '<=', '<'\]"):
        rules.condition("c", seeds_table({0: 1.0}), value, "=>", 0.0)
    with pytest.raises(ValueError, match=r"scope='each seed' is invalid"):
        rules.condition("c", seeds_table({0: 1.0}), value, ">", 0.0, scope="each seed")


def test_outcomes_only_skips_the_fragility_tests():
    with rules.outcomes_only():
        c = rules.condition("c", seeds_table({0: 0.9, 1: 0.5}), value, ">", 0.6, spread={"mse": 0.5})
    assert not c.holds and c.flips_without_seed == [] and c.flips_under_fp is None
    again = rules.condition("c", seeds_table({0: 0.9, 1: 0.5}), value, ">", 0.6, spread=NO_FP)
    assert again.flips_without_seed == [1]  # measured again outside


def condition_of(holds: bool, fragile: bool) -> rules.Condition:
    return rules.Condition("c", holds, "", flips_without_seed=[0] if fragile else [])


def test_a_verdict_is_fragile_when_its_outcome_could_flip():
    assert rules.verdict_fragile([condition_of(True, False), condition_of(True, True)])  # holds: any one
    assert not rules.verdict_fragile([condition_of(True, False), condition_of(True, False)])
    assert rules.verdict_fragile([condition_of(False, True), condition_of(True, False)])  # the one failing
    assert not rules.verdict_fragile([condition_of(False, True), condition_of(False, False)])  # both must flip


def test_seeds_to_settle_grow_as_the_margin_shrinks_against_the_spread():
    c = rules.condition("c", seeds_table({0: 0.9, 1: 0.8, 2: 0.7}), value, ">", 0.68, spread=NO_FP)
    assert rules.seeds_to_settle(c) in (25, 26)  # (0.1 / 0.02)^2 = 25, rounded up from float noise
    wide = rules.condition("c", seeds_table({0: 0.9, 1: 0.8, 2: 0.7}), value, ">", 0.1, spread=NO_FP)
    assert rules.seeds_to_settle(wide) == 3  # never fewer than the seeds run


def test_results_within_noise_of_the_best_are_tied():
    rows = [{"seed": s, "switch": w, "mse": m} for s, by in
            {0: {"5%": 0.8960, "50%": 0.8957, "90%": 0.8985, "0%": 0.98},
             1: {"5%": 0.8966, "50%": 0.8970, "90%": 0.8962, "0%": 0.99}}.items() for w, m in by.items()]
    found = rules.tied_with_best(pd.DataFrame(rows), "switch", "mse", spread={"mse": 0.003})
    assert found["best"] == "5%" and set(found["tied"]) == {"5%", "50%", "90%"} and found["tied"][0] == "5%"
    strict = rules.tied_with_best(pd.DataFrame(rows), "switch", "mse", spread=NO_FP)
    assert "0%" not in strict["tied"]
