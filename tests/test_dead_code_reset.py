"""RESET1 (vqstudy.findings.check_reset_substitutes, the "Dead-code reset against
pretraining" chapter) on hand-made run tables: its condition holding, failing and exactly
at its threshold at each setting, as tests/test_findings.py does for the other findings;
and the chapter's profiles entry, whose absolute thresholds are its relative ones times
the expected uses of a token per batch."""

import math
import re

import pytest
import pandas as pd

from vqstudy import findings, params, rules, sweeps
from vqstudy.training import positions_per_example

SEEDS = (0, 1, 2)
REF_USAGE, REF_MSE = 0.5, 2.0   # the pretrain runs without a reset: powers of two, so that ratios are exact


@pytest.fixture(autouse=True)
def no_floating_point_spread(monkeypatch):
    """No committed floating-point spread reaches these tables: the outcomes are the data's alone."""
    monkeypatch.setattr(rules, "fp_spread", lambda root=None: {})


def per_seed(value, i):
    return value[i] if isinstance(value, tuple) else value


def runs(resets: dict, setting: str = "synthetic", k: int = 1024, batch_tokens: int = 256,
         pretrain_resets: dict | None = None, seeds=SEEDS) -> pd.DataFrame:
    """One setting's run table: per seed, the pretrain and baseline runs without a reset
    (pretrain at REF_USAGE and REF_MSE; baseline collapsed), and a baseline run per relative
    threshold of ``resets``: threshold -> (usage, mse), each a number (every seed) or a
    tuple (one per seed); ``pretrain_resets`` the same for pretrain runs with a reset."""
    rows = []
    for i, seed in enumerate(seeds):
        common = {"setting": setting, "seed": seed, "codebook_size": k, "batch_tokens": batch_tokens}
        rows.append({**common, "regime": "pretrain", "reset": 0.0, "usage": REF_USAGE, "mse": REF_MSE, "perplexity": 300.0})
        rows.append({**common, "regime": "baseline", "reset": 0.0, "usage": 0.05, "mse": 3.0, "perplexity": 20.0})
        for regime, table in (("baseline", resets), ("pretrain", pretrain_resets or {})):
            for reset, (usage, mse) in table.items():
                rows.append({**common, "regime": regime, "reset": float(reset), "usage": per_seed(usage, i),
                             "mse": per_seed(mse, i), "perplexity": 100.0})
    return pd.DataFrame(rows)


def both(synthetic: dict, cifar10: dict) -> pd.DataFrame:
    return pd.concat([runs(synthetic), runs(cifar10, "cifar10", 2048, 4096)], ignore_index=True)


GOOD = {0.1: (0.3, 2.6), 1: (0.49, 2.05), 4: (0.6, 2.02), 16: (0.7, 2.08)}   # 1 and above within 5%


def test_reset1_holds_when_a_threshold_brings_baseline_to_pretrain_in_every_seed():
    v = findings.check_reset_substitutes(both(GOOD, {1: (0.5, 2.0)}))
    assert v.holds and v.claim == "RESET1" and v.role == "finding" and v.seeds == list(SEEDS)
    assert [c.holds for c in v.conditions] == [True, True]
    n = v.numbers
    assert n["synthetic_from"] == 1.0 and n["synthetic_from_absolute"] == 0.25 and n["synthetic_all_above"]
    assert n["synthetic_n_substitute"] == 3 and n["synthetic_n_thresholds"] == 4
    assert n["synthetic_expected"] == 0.25 and n["cifar10_expected"] == 2.0 and n["cifar10_from_absolute"] == 2.0
    assert n["synthetic_best"] == 4.0 and n["synthetic_best_absolute"] == 1.0   # the highest worst-seed score
    assert n["synthetic_usage_pretrain"] == REF_USAGE and n["synthetic_mse_baseline"] == 3.0
    assert "C1's setting from 1× the expected uses a batch (0.25), 3 of 4 thresholds" in v.headline


@pytest.mark.parametrize("broken, why", [
    ({1: (0.5, (2.0, 2.0, 2.12))}, "MSE 6% above pretrain's in seed 2"),
    ({1: ((0.5, 0.46, 0.5), 2.0)}, "usage 92% of pretrain's in seed 1"),
    ({1: (float("nan"), 2.0)}, "a missing usage"),
])
def test_reset1_fails_at_the_setting_where_no_threshold_is_within_in_one_seed(broken, why):
    v = findings.check_reset_substitutes(both(GOOD, broken))
    assert not v.holds, why
    assert [c.holds for c in v.conditions] == [True, False]
    assert v.numbers["cifar10_from"] == "none" and v.numbers["cifar10_n_substitute"] == 0
    assert "C3's setting (CIFAR-10) at none of the 1 thresholds swept" in v.headline


def test_reset1_needs_one_threshold_good_in_every_seed_not_a_good_threshold_per_seed():
    """Threshold 1 is within in seeds 0 and 1, threshold 4 in seed 2 only: every seed has a
    threshold that substitutes, but no threshold does in every seed."""
    split = {1: (0.5, (2.0, 2.0, 2.5)), 4: (0.5, (2.5, 2.5, 2.0))}
    v = findings.check_reset_substitutes(runs(split))
    assert not v.holds and v.numbers["synthetic_from"] == "none"
    worst = findings.worst_per_threshold(runs(split))
    assert list(worst.index) == [1.0, 4.0] and (worst < 1).all()


def test_reset1_at_its_threshold_holds_and_just_beyond_fails():
    """Usage exactly 95% of pretrain's and MSE exactly 5% above it: the score is exactly 1,
    which holds (≥), with a margin of 0; a usage one point lower fails."""
    at = {1: (0.95 * REF_USAGE, 1.05 * REF_MSE)}
    scores = findings.substitution_scores(runs(at))
    assert (scores.usage_share == 0.95).all() and (scores.mse_ratio == 1.05).all() and (scores.score == 1.0).all()
    v = findings.check_reset_substitutes(runs(at))
    assert v.holds and v.conditions[0].deciding == 1.0 and v.conditions[0].margin == 0.0
    assert not findings.check_reset_substitutes(runs({1: (0.94 * REF_USAGE, REF_MSE)})).holds
    assert not findings.check_reset_substitutes(runs({1: (REF_USAGE, 1.06 * REF_MSE)})).holds


def test_reset1_reads_baseline_runs_with_a_reset_against_pretrain_without_one_only():
    """Pretrain runs with a reset and the baseline runs without one do not enter the rule."""
    plain = findings.check_reset_substitutes(runs(GOOD))
    noisy = findings.check_reset_substitutes(runs(GOOD, pretrain_resets={1: (0.01, 99.0), 16: (1.0, 0.1)}))
    assert plain.holds == noisy.holds and plain.conditions[0].deciding == noisy.conditions[0].deciding
    scores = findings.substitution_scores(runs(GOOD, pretrain_resets={1: (0.01, 99.0)}))
    assert len(scores) == 4 * len(SEEDS) and set(scores.reset) == {0.1, 1.0, 4.0, 16.0}


def test_reset1_fails_where_a_seed_has_no_pretrain_reference():
    table = runs(GOOD)
    table = table[~((table.seed == 1) & (table.regime == "pretrain") & (table.reset == 0))]
    v = findings.check_reset_substitutes(table)
    assert not v.holds and v.conditions[0].deciding == -math.inf


def test_reset1_reports_whether_every_larger_threshold_also_substitutes():
    gappy = {0.1: (0.3, 2.6), 1: (0.5, 2.0), 4: (0.2, 3.0), 16: (0.5, 2.0)}
    v = findings.check_reset_substitutes(runs(gappy))
    assert v.holds and v.numbers["synthetic_from"] == 1.0 and not v.numbers["synthetic_all_above"]
    assert v.numbers["synthetic_n_substitute"] == 2


def test_reset1_without_a_baseline_run_with_a_reset_does_not_hold():
    v = findings.check_reset_substitutes(runs({}))
    assert not v.holds and v.conditions[0].deciding == -math.inf


def test_the_rule_text_is_built_from_its_tolerances():
    assert f"at least {findings.RESET_USAGE_SHARE:.0%} of the tokens in use" in findings.RESET1_RULE
    assert f"at most {findings.RESET_MSE_RATIO - 1:.0%} above" in findings.RESET1_RULE
    assert "95%" in findings.RESET1_RULE and "5% above" in findings.RESET1_RULE


# --- the chapter's profiles entry ---------------------------------------------------------------

RESET_NAME = re.compile(r"^(synthetic|cifar10)/(pretrain\+)?(vq|reset-([0-9.]+)x)$")


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_each_runs_absolute_threshold_is_its_relative_one_times_the_expected_uses(profile):
    """A run named SETTING/[pretrain+]reset-Rx uses the dead_code method at R times the
    expected uses of a token per batch (batch size x positions per example / K); a run
    named SETTING/[pretrain+]vq is the study's own quantizer without a reset."""
    plan = sweeps.plan("dead_code_reset", profile)
    assert plan.axes == ["run", "seed"]
    seen = set()
    for point, cfg in zip(plan.points, plan.configs):
        found = RESET_NAME.match(point["run"])
        assert found, point["run"]
        setting, pretrain, method, relative = found.groups()
        assert cfg.regime == ("pretrain" if pretrain else "baseline")
        assert cfg.data == {"synthetic": "gaussian_mixture", "cifar10": "cifar10"}[setting]
        if method == "vq":
            assert cfg.quantizer == "vq" and cfg.dead_code_threshold == 2.0
        else:
            expected = cfg.batch_size * positions_per_example(cfg) / cfg.codebook_size
            assert cfg.quantizer == "dead_code"
            assert cfg.dead_code_threshold == pytest.approx(float(relative) * expected, rel=1e-12), point["run"]
        seen.add((setting, bool(pretrain), method))
    for setting in ("synthetic", "cifar10"):  # both references at both settings
        assert {(setting, False, "vq"), (setting, True, "vq")} <= seen


def test_the_quick_no_reset_runs_are_c1s_and_c3s_runs(shares_c1_and_c3_runs):
    """At quick the runs without a reset are exactly C1's runs at K = 1024 and C3's at
    K = 2048 (the run cache shares them)."""
    assert shares_c1_and_c3_runs("dead_code_reset", "vq") == 12
    assert params.resolve("dead_code_reset", "quick")["seed"] == [0, 1, 2]
