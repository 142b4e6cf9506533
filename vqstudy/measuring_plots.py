"""The figures of the *Measuring collapse* chapter (``notebooks/measuring_collapse.ipynb``),
drawn from the tables :func:`vqstudy.measuring.measure_run` gives, in the conventions of
:mod:`vqstudy.plots` (its regime colours, panel size, plain-number log ticks, percent
ticks, seed bands clipped to what a metric can be, one legend for the figure)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from vqstudy import plots
from vqstudy.measuring import IN_ORDER, SHUFFLED

ROWS = {"perplexity": "perplexity", "usage": "tokens used"}


def _grid(settings: list, rows: int = 2):
    fig, axes = plt.subplots(rows, len(settings), figsize=(plots.PANEL[0] * len(settings), plots.PANEL[1] * rows + 0.9),
                             squeeze=False, layout="constrained")
    return fig, axes


def _power_of_two(v: float) -> str:
    """16, 1024, 1/8: a power of two as a plain number, or a fraction below 1."""
    return f"{v:g}" if v >= 1 else f"1/{round(1 / v)}"


def _log2_ticks(ax, values, most: int = 4) -> None:
    """A log-2 x axis with at most ``most`` labelled ticks, at powers of two spaced evenly
    (every one, every other, every third...), the rest unlabelled."""
    ax.set_xscale("log", base=2)
    lo, hi = min(values), max(values)
    ticks = [2.0 ** e for e in range(int(np.floor(np.log2(lo))), int(np.floor(np.log2(hi))) + 1)]
    step = max(1, int(np.ceil(len(ticks) / most)))
    ax.set_xticks(ticks[::step])
    ax.set_xticks(ticks, minor=True)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: _power_of_two(v)))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())


def _band(ax, g: pd.DataFrame, x: str, y: str, style: dict, label: str, bounds=(None, None)) -> None:
    stats = g.groupby(x)[y].agg(["mean", "std", "count"]).reset_index()
    ax.plot(stats[x], stats["mean"], label=label, **style)
    if (stats["count"] > 1).any():
        sd = stats["std"].fillna(0.0)
        lo, hi = (stats["mean"] - sd).clip(lower=bounds[0], upper=bounds[1]), \
            (stats["mean"] + sd).clip(lower=bounds[0], upper=bounds[1])
        ax.fill_between(stats[x], lo, hi, color=style["color"], alpha=0.15, linewidth=0)


def _y_axis(ax, metric: str, values) -> None:
    if metric == "usage":
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:g}%"))
        ax.yaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_ylim(top=1.15)
    else:
        plots.set_scale(ax, values)
    ax.set_ylabel(ROWS[metric])


def batch_figure(batches: pd.DataFrame, whole: pd.DataFrame, names: dict, train_batch: dict, k: dict) -> plt.Figure:
    """Per-batch perplexity (top) and usage (bottom) against the batch's size, one column per
    setting: per regime, the mean over the seeds of the batches' mean (band: one standard
    deviation over the seeds), the batches taken in order (solid) or shuffled (dashed); the
    whole-set value over every evaluation token dotted; the training batch and B = K marked;
    on usage, the most a batch of B tokens can use, min(1, B / K), in grey.

    ``batches``: setting, regime, seed, order, batch_tokens, perplexity, usage; ``whole``:
    setting, regime, seed, perplexity, usage; ``names``, ``train_batch``, ``k``: per setting."""
    settings = list(dict.fromkeys(batches.setting))
    fig, axes = _grid(settings)
    for j, setting in enumerate(settings):
        d, w = batches[batches.setting == setting], whole[whole.setting == setting]
        for i, metric in enumerate(ROWS):
            ax = axes[i, j]
            for regime in [r for r in plots.REGIME_COLORS if r in set(d.regime)]:
                color = plots.REGIME_COLORS[regime]
                for order, line in ((IN_ORDER, "-"), (SHUFFLED, "--")):
                    g = d[(d.regime == regime) & (d.order == order)]
                    if len(g):
                        _band(ax, g, "batch_tokens", metric,
                              dict(color=color, linestyle=line, marker="o" if order == IN_ORDER else None,
                                   markersize=4, linewidth=1.6), f"{regime}, {order}",
                              bounds=(1, None) if metric == "perplexity" else (0, 1))
                ax.axhline(w[w.regime == regime][metric].mean(), color=color, linestyle=":", linewidth=1.6,
                           label=f"{regime}, whole set")
            if metric == "usage":
                xs = np.array(sorted(d.batch_tokens.unique()), dtype=float)
                ax.plot(xs, np.minimum(1.0, xs / k[setting]), color="0.55", linewidth=1.0,
                        label="most a batch can use")
            ax.axvline(train_batch[setting], color="0.25", linestyle="-.", linewidth=1.1, label="training batch")
            ax.axvline(k[setting], color="0.6", linestyle=(0, (1, 3)), linewidth=1.3, label="B = K")
            _log2_ticks(ax, d.batch_tokens)
            _y_axis(ax, metric, pd.concat([d[metric], w[metric]]))
            if i == 0:
                ax.set_title(f"{names[setting]}\nK = {k[setting]}")
            if i == len(ROWS) - 1:
                ax.set_xlabel("tokens per batch B")
    plots.figure_legend(fig, axes.ravel())
    return fig


def first_n_figure(first: pd.DataFrame, names: dict, k: dict) -> plt.Figure:
    """Whole-set perplexity (top) and usage (bottom) over the first N evaluation tokens,
    against N / K, one column per setting: per regime the mean over the seeds with a band
    of one standard deviation; where a run kept only its first embeddings, its last point
    (every evaluation token, from its token counts) is joined by a dotted line; N = K marked.

    ``first``: setting, regime, seed, n_over_k, perplexity, usage, source ("embeddings" or
    "counts")."""
    settings = list(dict.fromkeys(first.setting))
    fig, axes = _grid(settings)
    for j, setting in enumerate(settings):
        d = first[first.setting == setting]
        for i, metric in enumerate(ROWS):
            ax = axes[i, j]
            for regime in [r for r in plots.REGIME_COLORS if r in set(d.regime)]:
                color = plots.REGIME_COLORS[regime]
                g = d[d.regime == regime]
                kept = g[g.source == "embeddings"]
                _band(ax, kept, "n_over_k", metric, dict(color=color, marker="o", markersize=4, linewidth=1.6),
                      regime, bounds=(1, None) if metric == "perplexity" else (0, 1))
                counted = g[g.source == "counts"]
                if len(counted):
                    last = kept[kept.n_over_k == kept.n_over_k.max()][metric].mean()
                    x_end = counted.n_over_k.max()
                    ax.plot([kept.n_over_k.max(), x_end], [last, counted[metric].mean()], color=color, linestyle=":",
                            linewidth=1.6)
                    ax.plot([x_end], [counted[metric].mean()], color=color, marker="s", markersize=6, linestyle="none")
            ax.axvline(1.0, color="0.6", linestyle=(0, (1, 3)), linewidth=1.3, label="N = K")
            _log2_ticks(ax, d.n_over_k)
            _y_axis(ax, metric, d[metric])
            if i == 0:
                ax.set_title(f"{names[setting]}\nK = {k[setting]}")
            if i == len(ROWS) - 1:
                ax.set_xlabel("tokens evaluated N / K")
    extra = [Line2D([], [], color="0.3", marker="s", linestyle=":", label="every test token (from the token counts)")]
    plots.figure_legend(fig, axes.ravel(), extra=extra if (first.source == "counts").any() else None)
    return fig


def ratio_figure(summary: pd.DataFrame, names: dict, threshold: float) -> plt.Figure:
    """Each run's per-batch perplexity at the training batch as a share of its whole-set
    perplexity (in order: filled; shuffled: hollow), one panel per setting, one column of
    points per regime; ``threshold`` dashed.

    ``summary``: setting, regime, seed, batch_ratio, shuffled_ratio."""
    settings = list(dict.fromkeys(summary.setting))
    fig, axes = plt.subplots(1, len(settings), figsize=(plots.PANEL[0] * len(settings), plots.PANEL[1] + 0.8),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, setting in zip(axes[0], settings):
        d = summary[summary.setting == setting]
        regimes = [r for r in plots.REGIME_COLORS if r in set(d.regime)]
        for x, regime in enumerate(regimes):
            g = d[d.regime == regime]
            color = plots.REGIME_COLORS[regime]
            jitter = np.linspace(-0.12, 0.12, len(g)) if len(g) > 1 else np.zeros(1)
            ax.plot(x + jitter - 0.08, g.batch_ratio, "o", color=color, markersize=7, label="batches in order")
            ax.plot(x + jitter + 0.08, g.shuffled_ratio, "o", markerfacecolor="none", color=color, markersize=7,
                    label="batches shuffled")
        ax.axhline(threshold, color="0.2", linestyle="--", linewidth=1.2, label=f"PQ1's threshold ({threshold:.0%})")
        ax.axhline(1.0, color="0.6", linestyle=":", linewidth=1.0, label="the whole-set value")
        ax.set_xticks(range(len(regimes)), regimes)
        ax.set_xlim(-0.6, len(regimes) - 0.4)
        ax.set_title(names[setting])
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    axes[0, 0].set_ylabel("per-batch / whole-set\nperplexity")
    axes[0, 0].set_ylim(0, max(1.05, float(summary[["batch_ratio", "shuffled_ratio"]].max().max()) * 1.05))
    handles = [Line2D([], [], marker="o", color="0.3", linestyle="none", label="batches in order"),
               Line2D([], [], marker="o", markerfacecolor="none", color="0.3", linestyle="none",
                      label="batches shuffled"),
               Line2D([], [], color="0.2", linestyle="--", label=f"PQ1's threshold ({threshold:.0%})"),
               Line2D([], [], color="0.6", linestyle=":", label="the whole-set value")]
    for ax in axes[0]:
        if ax.get_legend():
            ax.get_legend().remove()
    fig.legend(handles=handles, loc="outside upper center", frameon=False, ncol=2)
    return fig
