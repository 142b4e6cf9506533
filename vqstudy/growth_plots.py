"""The figure of the *Usage as the codebook grows* chapter (``notebooks/usage_growth.ipynb``),
in the conventions of :mod:`vqstudy.plots` (its regime colours, panel size, log-2 K axis,
percent ticks, seed bands clipped to what a metric can be, one legend for the figure).

Numbers quoted from other settings (other data, other models) are drawn in a style of their
own, grey and hollow with dotted or dashed lines, and their legend entries say "other
setting": they stand beside the study's lines for their shape only."""

import matplotlib.pyplot as plt
import pandas as pd

from vqstudy import plots

PANELS = {"usage": "tokens in use", "perplexity_share": "perplexity / K"}
# Other settings: grey, hollow markers, not a regime's colour or a solid line.
OTHER_STYLES = [dict(color="0.3", marker="D", markerfacecolor="white", markersize=7, linestyle=":", linewidth=1.6,
                     zorder=5),
                dict(color="0.3", marker="s", markerfacecolor="white", markersize=7, linestyle="--", linewidth=1.2,
                     zorder=5)]


def usage_figure(df: pd.DataFrame, threshold: float, others: list[dict] | None = None) -> plt.Figure:
    """Tokens in use (left) and perplexity as a share of K (right) against K on a log-2
    axis: per regime the mean over the seeds, with a band of one standard deviation over
    the seeds clipped to 0–100%; ``threshold`` (a share of K) dashed on the usage panel.

    ``df``: one row per run, columns regime, seed, codebook_size, usage, perplexity_share.
    ``others``: numbers of other settings, each ``{"label": ..., "k": [...], "usage":
    [...]}``, drawn on the usage panel in :data:`OTHER_STYLES` (their label should say
    that they are another setting)."""
    others = others or []
    styles = plots.line_styles(plots.hue_values(df, "regime"))
    line = f"GROW1's threshold: {threshold:.0%} in use"
    labels = [str(v) for v in styles] + [line] + [o["label"] for o in others]
    width = plots.PANEL[0] * 2
    fig, axes, _ = plots.panel_grid(2, legend_slot=False, top=plots.legend_height(labels, width))
    ks = sorted(set(df.codebook_size) | {k for o in others for k in o["k"]})
    for ax, metric in zip(axes, PANELS):
        plots.draw_lines(ax, df, "codebook_size", metric, "regime", styles, bounds=(0.0, 1.0))
        if metric == "usage":
            ax.axhline(threshold, color="0.45", linestyle="--", linewidth=1.2, label=line)
            for style, other in zip(OTHER_STYLES, others):
                ax.plot(other["k"], other["usage"], label=other["label"], **style)
        ax.set_ylim(-0.03, 1.03)
        ax.yaxis.set_major_formatter(plots.PercentTicks())
        plots.swept_axis(ax, ks, log2=True)
        ax.set_xlim(min(ks) / 1.4, max(ks) * 1.4)
        ax.set_xlabel("K (tokens)")
        ax.set_ylabel(PANELS[metric])
    plots.figure_legend(fig, axes)
    return fig
