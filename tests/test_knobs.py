"""KNOB1 (vqstudy.findings.check_knobs, the "Which knobs move collapse?" chapter) on
hand-made run tables: its condition holding, failing and exactly at its threshold at each
setting, the rescuing knob values it reports; and the chapter's profiles entry: one knob at
a time, each run's name saying which setting it changes and to what, and the runs with every
knob at its default exactly C1's runs at K = 1024 and C3's at K = 2048."""

import math
import re

import pandas as pd
import pytest

from vqstudy import findings, params, rules, sweeps
from vqstudy.training import Config

SEEDS = (0, 1, 2)
REF_USAGE, REF_MSE = 0.5, 2.0   # pretrain at the default: powers of two, so that shares are exact
SHARE = findings.KNOB_COLLAPSE_SHARE


@pytest.fixture(autouse=True)
def no_floating_point_spread(monkeypatch):
    """No committed floating-point spread reaches these tables: the outcomes are the data's alone."""
    monkeypatch.setattr(rules, "fp_spread", lambda root=None: {})


def per_seed(value, i):
    return value[i] if isinstance(value, tuple) else value


def runs(baseline: dict, setting: str = "synthetic", pretrain: dict | None = None, seeds=SEEDS) -> pd.DataFrame:
    """One setting's run table: per seed, pretrain at the default (REF_USAGE, REF_MSE), and a
    baseline run per knob value of ``baseline``: name -> (usage, mse), each a number (every
    seed) or a tuple (one per seed); ``pretrain`` the same for pretrain runs with a knob
    turned. The default's baseline is collapsed unless ``baseline`` names it."""
    baseline = {findings.KNOB_DEFAULT: (0.1, 3.0), **baseline}
    rows = []
    for i, seed in enumerate(seeds):
        common = {"setting": setting, "seed": seed}
        rows.append({**common, "knob": findings.KNOB_DEFAULT, "regime": "pretrain", "usage": REF_USAGE,
                     "mse": REF_MSE, "perplexity": 300.0})
        for regime, table in (("baseline", baseline), ("pretrain", pretrain or {})):
            for knob, (usage, mse) in table.items():
                rows.append({**common, "knob": knob, "regime": regime, "usage": per_seed(usage, i),
                             "mse": per_seed(mse, i), "perplexity": 50.0})
    return pd.DataFrame(rows)


def both(synthetic: dict, cifar10: dict) -> pd.DataFrame:
    return pd.concat([runs(synthetic), runs(cifar10, "cifar10")], ignore_index=True)


COLLAPSED = {"lr-x10": (0.2, 2.5), "beta-2": (0.3, 2.4), "codebook-gradient": ((0.1, 0.25, 0.35), 2.6)}


def test_knob1_holds_when_baseline_stays_below_the_share_under_every_knob_in_every_seed():
    v = findings.check_knobs(both(COLLAPSED, {"optimizer-adagrad": (0.125, 2.2)}))
    assert v.holds and v.claim == "KNOB1" and v.role == "finding" and v.seeds == list(SEEDS)
    assert [c.holds for c in v.conditions] == [True, True]
    n = v.numbers
    assert n["synthetic_n_values"] == 4 and n["cifar10_n_values"] == 2
    assert n["synthetic_largest_share"] == pytest.approx(0.7)   # codebook-gradient, seed 2: 0.35 / 0.5
    assert n["synthetic_closest"] == "beta-2" and n["synthetic_closest_share"] == pytest.approx(0.6)
    assert n["synthetic_rescuing"] == "none" and n["synthetic_n_rescuing"] == 0
    assert n["synthetic_usage_pretrain"] == REF_USAGE and n["synthetic_default_share"] == pytest.approx(0.2)
    assert v.conditions[0].margin == pytest.approx(SHARE - 0.7)


@pytest.mark.parametrize("broken, why", [
    ({"lr-x0.1": ((0.2, 0.2, 0.4), 2.5)}, "usage 80% of pretrain's in seed 2"),
    ({"batch-x4": (0.5, 2.0)}, "a knob that rescues baseline in every seed"),
    ({"latent-8": (float("nan"), 2.0)}, "a missing usage"),
    ({findings.KNOB_DEFAULT: (0.45, 2.2)}, "baseline at the default not collapsed"),
])
def test_knob1_fails_at_the_setting_where_one_knob_value_lifts_baseline_in_one_seed(broken, why):
    v = findings.check_knobs(both(COLLAPSED, {**COLLAPSED, **broken}))
    assert not v.holds, why
    assert [c.holds for c in v.conditions] == [True, False], why


def test_knob1_at_its_threshold_fails_and_just_below_holds():
    """Baseline's usage exactly 75% of pretrain's (0.375 / 0.5): the comparison is strict,
    so the condition fails with a margin of exactly 0; a hair below, it holds."""
    at = findings.check_knobs(runs({"decay-0.9": (SHARE * REF_USAGE, 2.5)}))
    c = at.conditions[0]
    assert not at.holds and c.deciding == SHARE and c.margin == 0.0 and c.threshold == SHARE
    below = findings.check_knobs(runs({"decay-0.9": (SHARE * REF_USAGE - 1e-6, 2.5)}))
    assert below.holds and below.conditions[0].margin > 0


def test_knob1_compares_each_seed_with_its_own_pretrain_reference():
    """Seed 1's reference uses half the tokens of the others': a baseline at 0.3 is 60% of
    0.5 but 120% of 0.25."""
    table = runs({"lr-x10": (0.3, 2.5)})
    table.loc[(table.seed == 1) & (table.regime == "pretrain"), "usage"] = 0.25
    v = findings.check_knobs(table)
    assert not v.holds and v.conditions[0].values[1] == pytest.approx(1.2)
    assert v.conditions[0].values[0] == pytest.approx(0.6)


def test_knob1_fails_where_a_seed_has_no_reference():
    table = runs(COLLAPSED)
    table = table[~((table.seed == 2) & (table.regime == "pretrain"))]
    v = findings.check_knobs(table)
    assert not v.holds and math.isnan(v.conditions[0].values[2])


def test_pretrain_runs_with_a_knob_turned_do_not_enter_the_rule():
    plain = findings.check_knobs(runs(COLLAPSED))
    turned = findings.check_knobs(runs(COLLAPSED, pretrain={"lr-x10": (0.01, 99.0), "beta-2": (1.0, 0.1)}))
    assert plain.holds == turned.holds and plain.conditions[0].deciding == turned.conditions[0].deciding


def test_rescuing_knob_values_are_reported_at_the_tolerances_in_every_seed():
    """Rescued: usage at least 95% and MSE at most 5% above pretrain's (default) in every
    seed; exactly at both tolerances counts; one seed short does not."""
    table = runs({"batch-x4": (0.95 * REF_USAGE, 1.05 * REF_MSE), "lr-x10": (REF_USAGE, (2.0, 2.0, 2.2)),
                  "beta-1": (0.6, 1.5)})
    scores = findings.rescue_scores(table)
    assert (scores[scores.knob == "batch-x4"].score == 1.0).all()
    assert findings.rescuing(table) == ["batch-x4", "beta-1"]
    v = findings.check_knobs(table)
    assert not v.holds and v.numbers["synthetic_rescuing"] == "batch-x4, beta-1"
    assert v.numbers["synthetic_n_rescuing"] == 2 and v.numbers["synthetic_closest"] == "beta-1"


def test_relative_to_default_divides_by_the_same_setting_and_seed():
    table = both({"lr-x10": (0.25, 3.0)}, {"lr-x10": (0.125, 1.0)})
    rel = findings.relative_to_default(table)
    row = rel[(rel.setting == "cifar10") & (rel.knob == "lr-x10")]
    assert (row.usage_share == 0.25).all() and (row.mse_ratio == 0.5).all()
    ref = rel[(rel.regime == "pretrain") & (rel.knob == findings.KNOB_DEFAULT)]
    assert (ref.usage_share == 1).all() and (ref.mse_ratio == 1).all()


def test_without_runs_knob1_does_not_hold():
    v = findings.check_knobs(runs({}).iloc[0:0])
    assert not v.holds


def test_the_rule_text_is_built_from_its_thresholds():
    assert f"fewer than {SHARE:.0%} as many tokens" in findings.KNOB1_RULE
    assert f"< {SHARE:g}" in findings.KNOB1_RULE
    assert "at least 95% of the reference's usage and at most 5% above its MSE" in findings.KNOB1_RULE


# --- the chapter's profiles entry ---------------------------------------------------------------

RUN_NAME = re.compile(r"^(synthetic|cifar10)/(pretrain\+)?(default|([a-z]+)-(x?)([0-9.]+|[a-z]+))$")
FIELD = {"lr": "lr", "beta": "beta", "decay": "decay", "codebook": "codebook_update", "batch": "batch_size",
         "optimizer": "optimizer", "latent": "latent_dim"}


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_each_run_turns_one_knob_as_its_name_says(profile):
    """A run SETTING/[pretrain+]NAME-xM sets one training setting to M times its value in
    SETTING/default, NAME-V to V; nothing else differs from SETTING/default but the regime."""
    plan = sweeps.plan("knobs", profile)
    assert plan.axes == ["run", "seed"]
    runs_ = params.resolve("knobs", profile)["run"]
    seen = set()
    for name, fields in runs_.items():
        found = RUN_NAME.match(name)
        assert found, name
        setting, pretrain, knob, family, times, value = found.groups()
        cfg = Config(**fields)
        default = Config(**runs_[f"{setting}/default"])
        assert cfg.regime == ("pretrain" if pretrain else "baseline"), name
        assert default.regime == "baseline" and Config(**runs_[f"{setting}/pretrain+default"]).regime == "pretrain"
        changed = {f for f in Config.__dataclass_fields__ if f != "regime" and getattr(cfg, f) != getattr(default, f)}
        if knob == "default":
            assert changed == set(), name
        else:
            field = FIELD[family]
            assert changed == {field}, name
            want = getattr(default, field) * float(value) if times else type(getattr(default, field))(value)
            assert getattr(cfg, field) == pytest.approx(want, rel=1e-12) if times else getattr(cfg, field) == want, name
        seen.add((setting, bool(pretrain), knob))
    for setting in ("synthetic", "cifar10"):   # both references at both settings
        assert {(setting, False, "default"), (setting, True, "default")} <= seen


def test_the_quick_default_runs_are_c1s_and_c3s_runs(shares_c1_and_c3_runs):
    """At quick the runs with every knob at its default are exactly C1's runs at K = 1024
    and C3's at K = 2048, field for field (the run cache shares them)."""
    assert shares_c1_and_c3_runs("knobs", "default") == 12 and params.resolve("knobs", "quick")["seed"] == [0, 1, 2]


def test_at_quick_c1s_setting_sweeps_every_knob_in_both_regimes():
    runs_ = params.resolve("knobs", "quick")["run"]
    c1 = {n.split("/", 1)[1] for n in runs_ if n.startswith("synthetic/")}
    families = {n.split("-")[0] for n in c1 if n != "default" and not n.startswith("pretrain+")}
    assert families == set(FIELD)
    assert {n for n in c1 if not n.startswith("pretrain+")} == {n[len("pretrain+"):] for n in c1 if n.startswith("pretrain+")}
