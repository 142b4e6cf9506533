"""How the book's tables write numbers (vqstudy.plots.number, mean_sd, summary_table):
for people, and narrow enough that a table fits the page's column."""
import numpy as np
import pandas as pd

from vqstudy import plots


def test_numbers_have_three_significant_digits_and_counts_no_decimals():
    assert plots.number(0.90812) == "0.908"
    assert plots.number(16.437) == "16.4"
    assert plots.number(0.000123456) == "0.000123"
    assert plots.number(1024.0) == "1024"
    assert plots.number(float("nan")) == "—"


def test_a_tiny_value_is_a_power_of_ten_not_a_run_of_zeros():
    # an initial codebook 10^8 times narrower than the embeddings (uniform(-1/K, 1/K))
    assert plots.number(3.3912e-8) == "3.39×10⁻⁸"
    assert plots.number(-2.5e-6) == "-2.50×10⁻⁶"
    assert plots.mean_sd(3.3912e-8, 1.52e-9, 3) == "(3.39\u00a0±\u00a00.15)×10⁻⁸"


def test_mean_and_spread_share_the_last_digit_and_one_seed_shows_no_spread():
    assert plots.mean_sd(0.9076, 0.0071, 3) == "0.908\u00a0±\u00a00.007"
    assert plots.mean_sd(0.9076, 0.00001, 3) == "0.908\u00a0±\u00a00.00001"
    assert plots.mean_sd(0.9076, float("nan"), 1) == "0.908"
    assert plots.mean_sd(0.9076, 0.01, 1) == "0.908"


def test_summary_table_cells_stay_narrow_whatever_the_scale():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                       "spread": np.r_[rng.uniform(3e-8, 4e-8, 3), rng.uniform(0.1, 0.2, 3)],
                       "mse": rng.uniform(0.5, 1.0, 6)})
    table = plots.summary_table(df, "method", ["spread", "mse"]).data
    widest = max(len(str(v)) for v in table.to_numpy().ravel())
    assert widest <= 20, table
    assert table.iloc[0, 1].endswith("×10⁻⁸"), table
