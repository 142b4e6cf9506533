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
    assert plots.mean_sd(3.3912e-8, 1.52e-9, 3) == "(3.39 ±\u00a00.15)×10⁻⁸"


def test_mean_and_spread_share_the_last_digit_and_one_seed_shows_no_spread():
    # a plain space before ±, where a phone's narrow table may put the spread under the mean
    assert plots.mean_sd(0.9076, 0.0071, 3) == "0.908 ±\u00a00.007"
    assert plots.mean_sd(0.9076, 0.00001, 3) == "0.908 ±\u00a00.00001"
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


def test_a_column_has_one_precision():
    # 100 ± 0 beside 99.97 ± 0.03 in one column read as if measured differently
    assert plots.column_places([100.0, 99.97], [0.0, 0.03]) == 2
    assert plots.mean_sd(100.0, 0.0, 3, places=2) == "100.00 ±\u00a00.00"
    assert plots.mean_sd(99.97, 0.03, 3, places=2) == "99.97 ±\u00a00.03"
    assert plots.column_places([3.17, 3.86, 3.09], [0.02, 0.1, 0.05]) == 2
    # a column spanning decades keeps each cell's own significant digits
    assert plots.column_places([0.483, 0.000174], [0.01, 0.00001]) is None
    df = pd.DataFrame({"K": [1] * 3 + [2] * 3, "seed": [0, 1, 2] * 2,
                       "usage": [1.0, 1.0, 1.0, 0.9994, 1.0, 1.0]})
    cells = plots.summary_table(df, "K", ["usage"]).data.iloc[:, 1].tolist()
    assert cells == ["100.00 ±\u00a00.00", "99.98 ±\u00a00.03"], cells


def test_measurements_keep_their_zeros_and_differences_show():
    assert plots.measured(1.0) == "1.00"
    assert plots.measured(1.0612) == "1.06"
    assert plots.measured(0.7271) == "0.727"
    assert plots.measured(1024.0) == "1024"
    assert plots.distinct([0.13721, 0.13684]) == ["0.1372", "0.1368"]
    assert plots.distinct([0.137, 0.137]) == ["0.137", "0.137"]


def test_percent_ticks_are_distinct():
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2.4))
    ax.plot([0, 1], [0.2, 0.28])
    plots.set_scale(ax, [0.2, 0.28], percent=True)
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(set(shown)) == len(shown), shown
    ax.set_yticks([0.2, 0.225, 0.25, 0.275])  # the cifar10_capacity axis that read 20/23/25/28%
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_yticklabels()]
    plt.close(fig)
    assert shown == ["20.0%", "22.5%", "25.0%", "27.5%"], shown


def test_seed_bands_stay_within_what_the_metric_can_be():
    df = pd.DataFrame({"regime": ["baseline"] * 3, "codebook_size": [8] * 3, "seed": [0, 1, 2],
                       "usage": [0.0, 0.02, 0.3], "perplexity": [1.0, 1.1, 9.0], "dead_tokens": [0, 0, 9]})
    for metric, low in (("usage", 0.0), ("perplexity", 1.0), ("dead_tokens", 0.0)):
        band = plots.band_stats(df, ["regime", "codebook_size"], metric)
        assert (band.lo >= low).all(), (metric, band)
    assert (plots.band_stats(df.assign(usage=[1.0, 0.98, 0.7]), ["regime"], "usage").hi <= 1.0).all()
