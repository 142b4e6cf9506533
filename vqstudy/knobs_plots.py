"""The figures of the "Which knobs move collapse?" chapter (``notebooks/knobs.ipynb``): each
knob value's usage and MSE relative to the reference (pretrain with every knob at its
default, same seed), one row per knob value, ranked by what it does to baseline's usage
(:func:`vqstudy.plots.methods_dotplot` draws the rows)."""

import matplotlib.pyplot as plt
import pandas as pd

from vqstudy import findings, plots

LABELS = {"usage_share": "tokens used / pretrain's at the default", "mse_ratio": "MSE / pretrain's at the default",
          "regime": "regime"}


def ranked(rel: pd.DataFrame, default: str = findings.KNOB_DEFAULT) -> list:
    """The knob values of one setting's runs (columns knob, regime, usage_share), ranked by
    baseline's seed-mean usage share, highest first; a value without a baseline run (a
    pretrain-only value) after them; the default wherever its share puts it."""
    base = rel[rel.regime == "baseline"].groupby("knob", sort=False).usage_share.mean()
    order = list(base.sort_values(ascending=False, kind="stable").index)
    return order + [k for k in dict.fromkeys(rel.knob) if k not in order]


def knob_dotplot(rel: pd.DataFrame, order: list | None = None) -> plt.Figure:
    """One setting's runs with ``usage_share`` and ``mse_ratio`` (:func:`vqstudy.findings.relative_to_default`):
    a row per knob value (``order``, default :func:`ranked`), each seed a dot and the seed
    mean a marker with a bar of one standard deviation, coloured by regime; dashed lines at
    KNOB1's share (collapse persists to its left) and at the rescue tolerances."""
    order = order or ranked(rel)
    threshold = f"KNOB1: {findings.KNOB_COLLAPSE_SHARE:.0%}"
    usage, mse = f"rescue: {findings.KNOB_RESCUE_USAGE:.0%}", f"rescue: {findings.KNOB_RESCUE_MSE:g}×"
    references = {"usage_share": [(threshold, findings.KNOB_COLLAPSE_SHARE), (usage, findings.KNOB_RESCUE_USAGE)],
                  "mse_ratio": [(mse, findings.KNOB_RESCUE_MSE)]}
    fig = plots.methods_dotplot(rel, "knob", ["usage_share", "mse_ratio"], order=order, labels=LABELS,
                                bounds={"usage_share": (0.0, None), "mse_ratio": (0.0, None)}, references=references)
    # KNOB1's threshold in black and dotted, the rescue tolerances grey and dashed; the legend drawn again with them
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_label() == threshold:
                line.set(color="black", linestyle=":", linewidth=1.6)
    for legend in list(fig.legends):
        legend.remove()
    plots.figure_legend(fig, fig.axes, title=plots.label("regime", LABELS))
    fig.set_figheight(max(fig.get_figheight(), 0.3 * len(order) + 2.6))
    return fig
