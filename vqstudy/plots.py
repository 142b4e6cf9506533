"""Figures and tables. Each function draws one kind of figure from run results or a
results table and returns the matplotlib Figure (or, for tables, a styled table), so a
notebook cell is one call; a chapter glues it (:func:`glue_figure`) and shows it as a
numbered ``{glue:figure}`` with a caption and alt text.

Conventions, so that a reader can trust a figure at a glance: every axis has a label in
words (:data:`LABELS`, a notebook may override one), fractions are shown as percentages
with ticks precise enough to tell apart, an axis whose values span a decade or more is
logarithmic with plain-number ticks, panels that compare regimes or moments share their
axes, and a seed band (mean ± one standard deviation) never leaves what its metric can be
(:data:`BOUNDS`: usage and accuracies within 0–100%, perplexity at least 1, counts at
least 0).

Legible from a desktop's column (about 780 px) down to a phone's (about 340 px): at most
two panels side by side (:func:`panel_grid`; a third metric puts the legend in the fourth
place), fonts of :data:`RC` (about 9.5 px on a phone's column, 16 px on a desktop's), and
lines told apart by colour, marker and line style, not colour alone (:func:`line_styles`).
"""

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import ticker
from matplotlib.lines import Line2D

REGIME_COLORS = {"baseline": "#d95f02", "pretrain": "#1b9e77"}

# Font sizes for every figure a chapter draws: a figure two panels wide (about 5.7 inches) is
# shown about 330 px wide on a phone, where 12 pt becomes about 9.5 px.
RC = {"font.size": 12.5, "axes.titlesize": 12.5, "axes.labelsize": 12.5, "xtick.labelsize": 12,
      "ytick.labelsize": 12, "legend.fontsize": 11.5, "legend.title_fontsize": 11.5, "figure.titlesize": 13,
      "lines.markersize": 6, "lines.linewidth": 1.8}
plt.rcParams.update(RC)
PANEL = (2.85, 2.4)  # inches of one panel of a metric figure: two a row make about 5.7 inches
COLUMNS = 2           # panels side by side, at most

# What a column is called on a figure or in a table (a notebook's ``labels`` win).
LABELS = {
    "codebook_size": "codebook size K (tokens)",
    "hidden": "encoder hidden width (units)",
    "regime": "regime",
    "mixture": "mixture",
    "seed": "seed",
    "step": "training step",
    "perplexity": "perplexity",
    "usage": "tokens used",
    "dead_tokens": "dead tokens",
    "codebook_spread": "codebook spread",
    "classes_covered": "classes covered",
    "min_tokens_per_class": "tokens of the poorest class",
    "mse": "MSE",
    "autoencoder_mse": "MSE without quantization",
    "loss": "training loss",
    "probe_accuracy": "linear-probe accuracy",
    "fisher_ratio": "Fisher ratio",
    "silhouette": "silhouette",
    "effective_rank": "effective rank",
    "seconds": "wall time (s)",
}
# Fractions, shown as percentages: ticks in % on figures, values times 100 under a "(%)"
# header in tables.
PERCENT = {"usage", "probe_accuracy"}
# The per-example metrics (chapters cifar10_capacity and token_probe; vqstudy.metrics.token_probes).
LABELS.update({"pooled_probe_accuracy": "linear-probe accuracy (per image)",
               "pooled_fisher_ratio": "Fisher ratio (per image)",
               "pooled_effective_rank": "effective rank (per image)",
               "pooled_silhouette": "silhouette (per image)",
               "probe_token_accuracy": "probe on the tokens",
               "probe_quantized_accuracy": "probe on the token vectors",
               "probe_embedding_accuracy": "probe on the embeddings"})
PERCENT |= {"pooled_probe_accuracy", "probe_token_accuracy", "probe_quantized_accuracy", "probe_embedding_accuracy"}
# Short names for the columns a table is grouped by.
KEY_LABELS = {"codebook_size": "K"}

# What a metric can be: a seed band (mean ± sd) is clipped to it, on every figure.
BOUNDS = {"usage": (0.0, 1.0), "perplexity": (1.0, None), "mse": (0.0, None), "autoencoder_mse": (0.0, None),
          "codebook_spread": (0.0, None), "fisher_ratio": (0.0, None), "dead_tokens": (0.0, None),
          "classes_covered": (0.0, None), "min_tokens_per_class": (0.0, None), "effective_rank": (1.0, None),
          "silhouette": (-1.0, 1.0), "loss": (0.0, None), "seconds": (0.0, None),
          "pooled_fisher_ratio": (0.0, None), "pooled_effective_rank": (1.0, None), "pooled_silhouette": (-1.0, 1.0)}
BOUNDS.update({name: (0.0, 1.0) for name in PERCENT})

# Lines that are not regimes: colours told apart (no two pinks), a marker each, and the
# reference of a comparison in black, thicker, with a star.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#393b79", "#7f7f7f", "#ad494a"]
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "<", ">", "h", "p", "d"]
REFERENCE_STYLE = dict(color="black", linestyle="-", marker="*", markersize=11, linewidth=2.6, zorder=6)
MANY_LINES = 4  # above this many lines a panel shows its seed spread as bars at the points, not shaded bands

# The markers of tokens in a latent-space panel: black, outside the class palette (tab10),
# so a token is never mistaken for an embedding of some class; smaller for a large codebook,
# so that the embeddings stay visible under a thousand tokens.
USED_TOKEN = dict(marker="x", c="black")
DEAD_TOKEN = dict(marker="o", facecolors="none", edgecolors="black")


def token_size(k: int) -> tuple[float, float]:
    """(marker area, line width) for ``k`` tokens in one panel."""
    scale = float(np.clip(np.sqrt(64 / max(k, 1)), 0.3, 1.0))
    return 18 * scale, 0.5 + 0.4 * scale


def token_legend() -> list:
    """Legend entries for the token markers, at a readable size whatever K."""
    return [Line2D([], [], marker="x", color="black", linestyle="none", markersize=7, label="token in use"),
            Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="black", linestyle="none",
                   markersize=7, label="dead token")]


def label(name: str, labels: dict | None = None) -> str:
    return (labels or {}).get(name) or LABELS.get(name) or name.replace("_", " ")


def axis_label(name: str, labels: dict | None = None, width: int = 26) -> str:
    """:func:`label` wrapped onto lines of at most ``width`` characters, so that a long
    label stays within its panel."""
    return "\n".join(textwrap.wrap(label(name, labels), width)) or label(name, labels)


def header(name: str, labels: dict | None = None) -> str:
    """A table's column header: the label, with "(%)" for a fraction shown in percent."""
    text = label(name, labels)
    return f"{text} (%)" if name in PERCENT and "%" not in text else text


def number(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits: 0.000123, 0.908, 16.4, 738, 1024; a whole
    number (a count) without decimals. Below :data:`TINY` (where fixed notation would be a
    run of zeros wider than a table column) as a power of ten: 3.39×10⁻⁸."""
    if not np.isfinite(x):
        return "—"
    if x != 0 and abs(x) < TINY:
        mantissa, exponent = power_of_ten(x)
        return f"{mantissa:.{digits - 1}f}×10{superscript(exponent)}"
    return str(int(x)) if float(x).is_integer() else f"{x:.{decimals(x, digits)}f}"


def measured(x: float, digits: int = 3) -> str:
    """A measurement (not a count) with ``digits`` significant digits, its zeros kept:
    1.00, 0.727, 16.4, 90.0; 1024 and larger in full; "—" when not finite."""
    if not np.isfinite(x):
        return "—"
    if x != 0 and abs(x) < TINY:
        return number(x, digits)
    return f"{x:.{decimals(x, digits)}f}"


def distinct(values, digits: int = 3, most: int = 6) -> list[str]:
    """``values`` as :func:`measured` strings with the same number of significant digits,
    more of them (up to ``most``) until values that differ are written differently: a
    Fisher ratio of 0.1372 against 0.1368 reads 0.1372 and 0.1368, not 0.137 twice."""
    values = [float(v) for v in values]
    shown = [measured(v, digits) for v in values]
    for d in range(digits, most + 1):
        shown = [measured(v, d) for v in values]
        if not any(shown[i] == shown[j] and values[i] != values[j]
                   for i in range(len(values)) for j in range(i + 1, len(values))):
            break
    return shown


TINY = 1e-4


def power_of_ten(x: float) -> tuple[float, int]:
    """``x`` as ``mantissa × 10^exponent`` with 1 ≤ |mantissa| < 10."""
    exponent = math.floor(math.log10(abs(x)))
    return x / 10 ** exponent, exponent


def superscript(n: int) -> str:
    return str(n).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def decimals(x: float, digits: int = 3) -> int:
    """Decimal places that show ``x`` with ``digits`` significant digits (0 for |x| ≥ 10^(digits-1))."""
    if not np.isfinite(x) or x == 0:
        return 0
    return max(0, digits - 1 - math.floor(math.log10(abs(x))))


# Between a mean and its spread: a space where a narrow table may break the cell (the spread
# goes under the mean), a no-break space after ±, so "± 0.02" stays together.
PLUS_MINUS = " ±\u00a0"


def mean_sd(mean: float, sd: float, n: int, places: int | None = None) -> str:
    """``mean ± sd``, the spread to the mean's last digit (one significant digit when that
    would round it to 0); the mean alone when ``n`` is 1. ``places``: the decimal places
    of both, fixed (a table column's, :func:`column_places`). A tiny mean shares its power
    of ten with the spread: (3.39 ± 0.15)×10⁻⁸. Result tables keep the cell on one line
    (``white-space: nowrap``) except at a phone's width, where the spread may go under
    the mean."""
    if places is not None:
        shown = f"{mean:.{places}f}" if np.isfinite(mean) else "—"
        return shown if n < 2 or not np.isfinite(sd) else f"{shown}{PLUS_MINUS}{sd:.{places}f}"
    shown = number(mean)
    if n < 2 or not np.isfinite(sd):
        return shown
    if mean != 0 and abs(mean) < TINY:
        mantissa, exponent = power_of_ten(mean)
        return f"({mean_sd(mantissa, sd / 10 ** exponent, n)})×10{superscript(exponent)}"
    places = 0 if float(mean).is_integer() else decimals(mean)
    if sd > 0 and round(sd, places) == 0:
        places = decimals(sd, 1)
    return f"{shown}{PLUS_MINUS}{sd:.{places}f}"


def column_places(means, sds, digits: int = 3, extra: int = 2) -> int | None:
    """One number of decimal places for a table column, so that its cells line up and
    compare (100.00 ± 0.00 beside 99.97 ± 0.03, not 100 ± 0 beside 100.0 ± 0.03): enough
    for ``digits`` significant digits of the column's smallest mean, and up to ``extra``
    more where a non-zero spread would otherwise round to 0. None (each cell its own
    significant digits, :func:`mean_sd`) when the column's non-zero means span a decade
    or more, or one of them is below :data:`TINY`."""
    means = np.asarray([m for m in means if np.isfinite(m)], dtype=float)
    sds = np.asarray([s for s in sds if np.isfinite(s) and s > 0], dtype=float)
    nonzero = np.abs(means[means != 0])
    if not len(nonzero):
        return 0
    if nonzero.min() < TINY or nonzero.max() / nonzero.min() >= 10:
        return None
    places = decimals(nonzero.min(), digits)
    while places < decimals(nonzero.min(), digits) + extra and len(sds) and (np.round(sds, places) == 0).any():
        places += 1
    return places


def in_percent(df: pd.DataFrame, columns) -> pd.DataFrame:
    """A copy with the :data:`PERCENT` columns times 100 (for tables)."""
    scaled = [c for c in columns if c in PERCENT and c in df]
    return df.assign(**{c: df[c] * 100 for c in scaled}) if scaled else df


# --- axes --------------------------------------------------------------------------------

def plain_ticks(axis) -> None:
    """Tick labels as plain numbers (10, 20, 50, 100), not powers of ten; on a log axis
    at 1, 2 and 5 times each power of ten, so that an axis spanning one decade or two still
    has several labelled ticks."""
    if axis.get_scale() == "log":
        low, high = sorted(axis.get_view_interval())
        decades = math.log10(high / low) if low > 0 and high > low else 0.0
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2.2 else (1.0,)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


class PercentTicks(ticker.Formatter):
    """Fractions as percentages with as many decimals as the ticks' spacing needs, so
    that no two ticks read the same (27.5%, 25.0%, 22.5%, not 28%, 25%, 23%)."""

    places = 0

    def set_locs(self, locs):
        super().set_locs(locs)
        steps = np.diff(np.sort(np.asarray(locs, dtype=float))) * 100
        steps = steps[steps > 1e-12]
        self.places = 0
        if len(steps):
            step = steps.min()
            while self.places < 4 and abs(step * 10 ** self.places - round(step * 10 ** self.places)) > 1e-6:
                self.places += 1

    def __call__(self, x, pos=None):
        return f"{100 * x:.{self.places}f}%"


def scale_for(values) -> str:
    """``log`` when positive values span a decade or more, ``symlog`` when they also
    include 0 (dead-token counts), else ``linear``."""
    v = np.asarray(pd.Series(values).dropna(), dtype=float)
    positive = v[v > 0]
    if len(positive) < 2 or positive.max() / positive.min() < 10 or (v < 0).any():
        return "linear"
    return "symlog" if (v == 0).any() else "log"


def set_scale(ax, values, which: str = "y", percent: bool = False) -> None:
    """Log or symlog (see :func:`scale_for`) with plain-number ticks, or percent ticks."""
    if percent:
        (ax.yaxis if which == "y" else ax.xaxis).set_major_formatter(PercentTicks())
        return
    kind = scale_for(values)
    axis = ax.yaxis if which == "y" else ax.xaxis
    setter = ax.set_yscale if which == "y" else ax.set_xscale
    if kind == "log":
        setter("log")
        plain_ticks(axis)
    elif kind == "symlog":
        setter("symlog", linthresh=1)
        plain_ticks(axis)
        (ax.set_ylim if which == "y" else ax.set_xlim)(0, None)  # counts: nothing below 0


def keep_within(ax, metric: str, bounds: tuple | None = None) -> None:
    """The y axis no further beyond what ``metric`` can be (:data:`BOUNDS`) than a sliver
    (no "110%" tick, no perplexity axis reaching 0.5)."""
    low, high = bounds or BOUNDS.get(metric, (None, None))
    y0, y1 = ax.get_ylim()
    pad = 0.03 * (y1 - y0)
    if ax.get_yscale() == "linear":
        ax.set_ylim(max(y0, low - pad) if low is not None else y0, min(y1, high + pad) if high is not None else y1)


def swept_axis(ax, values, log2: bool) -> None:
    """An x axis of swept values (K, widths, switches): log base 2 when asked, a tick at
    every value, labelled where the label has room (a value whose label would touch its
    labelled neighbour's keeps its tick without a label: 0, 10, 25, not 0 5 10 run
    together; 256, 1024, not 2565121024), the first and the last always labelled."""
    values = sorted(set(pd.Series(values).dropna()))
    if log2:
        ax.set_xscale("log", base=2)
    if len(values) > 12:
        return
    ax.set_xticks(values)
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    where = np.log2(values) if log2 else np.asarray(values, dtype=float)
    span = (where[-1] - where[0]) or 1.0
    width = ax.get_position().width * ax.figure.get_figwidth() * 0.75  # inches of the data on the axis, about
    char = 0.66 * RC["xtick.labelsize"] / 72                            # inches of a digit, about

    def text(v):
        return f"{v:g}"

    def room(a, b):  # do the labels of values a and b (indices) fit side by side?
        gap = (where[b] - where[a]) / span * width
        return gap >= (len(text(values[a])) + len(text(values[b]))) * char / 2 + 0.06

    shown = [len(values) - 1]
    for i in range(len(values) - 2, -1, -1):  # from the last value down, the first one forced in
        if room(i, shown[-1]) or i == 0:
            if i == 0 and not room(0, shown[-1]) and len(shown) > 1:
                shown.pop()
            shown.append(i)
    labelled = {values[i] for i in shown}
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: text(v) if v in labelled else ""))


def panel_grid(n: int, columns: int = COLUMNS, panel: tuple = PANEL, legend_slot: bool = True,
               sharex: bool = False, sharey: bool = False, top: float = 0.0):
    """``n`` panels in rows of at most ``columns`` (so a figure stays legible on a phone):
    returns the figure, its ``n`` axes, and the first unused place (for the legend, where
    ``legend_slot``) or None. ``top``: inches added for a legend above the panels."""
    columns = max(1, min(columns, n if not legend_slot or n % columns == 0 else columns))
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel[0] * columns, panel[1] * rows + top), squeeze=False,
                             sharex=sharex, sharey=sharey, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n], (flat[n] if legend_slot and len(flat) > n else None)


def legend_columns(labels: list[str], width_in: float, fontsize: float = RC["legend.fontsize"]) -> int:
    """How many legend columns fit across ``width_in`` inches (matplotlib fills a legend
    column by column; each column is as wide as its widest entry)."""
    def width(text: str) -> float:  # points: the line sample, gaps and the longest line of the text
        return max(len(line) for line in text.split("\n")) * 0.6 * fontsize + 4.8 * fontsize
    for ncol in range(len(labels), 1, -1):
        columns = [c for c in np.array_split(np.array(labels, dtype=object), ncol) if len(c)]
        if sum(max(width(s) for s in c) for c in columns) <= width_in * 72:
            return ncol
    return 1


def legend_height(labels: list[str], width_in: float) -> float:
    """Inches a legend of ``labels`` above the panels takes, in the columns that fit."""
    rows = math.ceil(len(labels) / legend_columns(labels, width_in))
    return 0.25 * rows + 0.35


def figure_legend(fig, axes, title: str | None = None, slot=None, extra: list | None = None) -> None:
    """One legend for the figure, every labelled line once (and the ``extra`` handles): in
    ``slot`` (an unused panel place, :func:`panel_grid`) when there is one, else above the
    panels, in as many columns as fit."""
    seen = {}
    for ax in np.ravel(axes):
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if not name.startswith("_"):
                seen.setdefault(name, handle)
        if ax.get_legend():
            ax.get_legend().remove()
    for handle in extra or []:
        seen.setdefault(handle.get_label(), handle)
    if not seen:
        return
    names = [textwrap.fill(name, 34) for name in seen]
    if slot is not None:
        crowded = len(names) > 7  # one column still, set tighter (two would not fit the place)
        slot.legend(list(seen.values()), names, loc="center", frameon=False, title=title,
                    fontsize=10 if crowded else RC["legend.fontsize"], labelspacing=0.3 if crowded else 0.5,
                    handlelength=1.8, handletextpad=0.5)
        return
    fig.legend(list(seen.values()), names, loc="outside upper center", frameon=False, title=title,
               ncol=legend_columns(names, fig.get_figwidth()))


# --- lines with seed bands --------------------------------------------------------------

def line_styles(values, reference=None, dashed=(), ordered: bool = False) -> dict:
    """A style per line (colour, marker, line style): the regimes' colours for regimes;
    else :data:`PALETTE` colours and :data:`MARKERS`, a colour ramp where the values are
    ordered (switches, widths); ``dashed`` values drawn dashed (a second group);
    ``reference`` in black, thicker, with a star, on top of the others."""
    values = list(values)
    styles = {}
    ramp = sns.color_palette("viridis", len(values) + 1)[:len(values)] if ordered else None
    others = [v for v in values if reference is None or v != reference]
    for i, v in enumerate(others):
        if v in REGIME_COLORS and set(others) <= set(REGIME_COLORS):
            color = REGIME_COLORS[v]
        else:
            color = ramp[values.index(v)] if ordered else PALETTE[i % len(PALETTE)]
        styles[v] = dict(color=color, marker=MARKERS[i % len(MARKERS)],
                         linestyle="--" if v in set(dashed) else "-", linewidth=1.8, markersize=6, zorder=3)
    if reference is not None and reference in values:
        styles[reference] = dict(REFERENCE_STYLE)
    return {v: styles[v] for v in values}


def hue_values(df: pd.DataFrame, hue: str | None) -> list:
    """The values of ``hue`` in their order: a categorical's, else sorted."""
    if hue is None:
        return [None]
    column = df[hue]
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [v for v in column.cat.categories if v in set(column)]
    return sorted(column.dropna().unique(), key=lambda v: (str(type(v)), v))


def band_stats(df: pd.DataFrame, keys: list[str], metric: str, bounds: tuple | None = None) -> pd.DataFrame:
    """Mean, standard deviation and count of ``metric`` per ``keys`` (over the seeds), with
    the band ``lo``–``hi`` (mean ± sd) clipped to what the metric can be (``bounds``, else
    :data:`BOUNDS`)."""
    g = df.groupby(keys, observed=True, sort=True)[metric].agg(["mean", "std", "count"]).reset_index()
    sd = g["std"].fillna(0.0)
    low, high = bounds or BOUNDS.get(metric, (None, None))
    g["lo"], g["hi"] = g["mean"] - sd, g["mean"] + sd
    g["lo"], g["hi"] = g["lo"].clip(lower=low, upper=high), g["hi"].clip(lower=low, upper=high)
    return g


def draw_lines(ax, df: pd.DataFrame, x: str, y: str, hue: str | None, styles: dict, band: str = "fill",
               dodge: str | None = None, bounds: tuple | None = None, markers: bool = True,
               markevery=None) -> pd.DataFrame:
    """One line per ``hue`` value (mean over seeds of ``y`` against ``x``) in its style,
    with its seed band clipped (:func:`band_stats`): ``band`` "fill" (shaded), "bars" (a
    bar at each point) or None. ``dodge`` ("log" or "linear") sets the lines' points a
    little apart along x, so that bars at one x do not hide each other; ``markers`` False
    draws lines alone, ``markevery`` a marker every so often (a curve of many points).
    Returns the statistics drawn."""
    data = df.dropna(subset=[y])
    keys = ([hue] if hue else []) + [x]
    stats = band_stats(data, keys, y, bounds)
    drawn = [v for v in styles if hue is None or v in set(stats[hue])]
    span = (data[x].max() - data[x].min()) or 1.0
    for i, value in enumerate(drawn):
        g = stats if hue is None else stats[stats[hue] == value]
        xs = g[x].astype(float)
        offset = i - (len(drawn) - 1) / 2
        if dodge == "log":
            xs = xs * 1.035 ** offset
        elif dodge == "linear":
            xs = xs + 0.008 * span * offset
        style = dict(styles[value])
        if not markers:
            style.pop("marker", None)
        elif markevery is not None:
            style.update(markevery=markevery, markersize=min(style.get("markersize", 6), 5.5))
        ax.plot(xs, g["mean"], label="_" if value is None else str(value), **style)
        if band and (g["count"] > 1).any():
            if band == "bars":
                ax.vlines(xs, g.lo, g.hi, color=style["color"], linewidth=1.1, alpha=0.75, zorder=style["zorder"])
            else:
                ax.fill_between(xs, g.lo, g.hi, color=style["color"], alpha=0.15, linewidth=0)
    return stats


# --- latent spaces ---------------------------------------------------------------------

def snapshot_points(snapshot: dict, max_points: int = 2000):
    emb = snapshot["embeddings"][:max_points].numpy()
    return emb, snapshot["labels"][:max_points].numpy(), snapshot["tokens"].numpy(), snapshot["counts"].numpy()


def embeddings_and_tokens(snapshot: dict, max_points: int = 2000) -> list[np.ndarray]:
    emb, _, tokens, _ = snapshot_points(snapshot, max_points)
    return [emb, tokens]


def extent(points: list[np.ndarray]) -> tuple[tuple[float, float], tuple[float, float]]:
    """x and y limits holding every point, with a 5% margin."""
    stacked = np.concatenate([p[:, :2] for p in points if len(p)])
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    pad = 0.05 * np.maximum(high - low, 1e-6)
    return (low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1])


def draw_latent(ax, emb, labels, tokens, counts) -> None:
    ax.scatter(emb[:, 0], emb[:, 1], c=labels, cmap="tab10", vmin=0, vmax=9, s=4, alpha=0.5, linewidths=0)
    used = counts > 0
    size, width = token_size(len(tokens))
    ax.scatter(tokens[used, 0], tokens[used, 1], s=size, linewidths=width, **USED_TOKEN)
    ax.scatter(tokens[~used, 0], tokens[~used, 1], s=size, linewidths=width, **DEAD_TOKEN)


def latent_panel(ax, snapshot: dict, title: str, max_points: int = 2000) -> None:
    """2-D embeddings coloured by class (tab10), with every token drawn on top: tokens in
    use as black crosses, dead ones (never the nearest token on the evaluation set) as
    hollow black circles; ticks shown, so panels can be compared."""
    draw_latent(ax, *snapshot_points(snapshot, max_points))
    ax.set_title(title, fontsize=12)
    ax.tick_params(labelsize=10)


def zoom_inset(ax, snapshot: dict, share: float, max_points: int = 2000) -> None:
    """A magnified copy of a panel whose points fill less than ``share`` of the shared
    axes (the untrained encoder's small blob), its own scale written on its ticks."""
    emb, labels, tokens, counts = snapshot_points(snapshot, max_points)
    (x0, x1), (y0, y1) = extent([emb, tokens])
    (X0, X1), (Y0, Y1) = ax.get_xlim(), ax.get_ylim()
    if max(x1 - x0, y1 - y0) >= share * max(X1 - X0, Y1 - Y0):
        return
    # in the corner away from the points it magnifies
    cx, cy = ((x0 + x1) / 2 - X0) / (X1 - X0), ((y0 + y1) / 2 - Y0) / (Y1 - Y0)
    inset = ax.inset_axes([0.04 if cx > 0.5 else 0.54, 0.04 if cy > 0.5 else 0.50, 0.42, 0.42])
    draw_latent(inset, emb, labels, tokens, counts)
    inset.set_xlim(x0, x1)
    inset.set_ylim(y0, y1)
    inset.tick_params(labelsize=8, length=2, pad=1)
    inset.set_title(f"zoom ×{(X1 - X0) / max(x1 - x0, y1 - y0):.0f}", fontsize=9, pad=2)
    ax.indicate_inset_zoom(inset, edgecolor="0.4")


def latent_space(results: dict, k: int, max_points: int = 2000) -> plt.Figure:
    """The C1 headline: rows = regimes, columns = at VQ initialisation / after training,
    all four panels on the same axes (so the untrained encoder's blob looks as small as it
    is, with a magnified inset). ``results`` maps regime -> one run result."""
    panels = [(regime, when, r) for regime, r in results.items() for when in ("init", "final")]
    fig, axes = plt.subplots(len(results), 2, figsize=(6.0, 3.1 * len(results) + 0.7), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    xlim, ylim = extent([p for _, when, r in panels for p in embeddings_and_tokens(r[when], max_points)])
    for ax, (regime, when, r) in zip(axes.ravel(), panels):
        m = r["init_metrics"] if when == "init" else r["metrics"]
        moment = "VQ initialisation" if when == "init" else "end of training"
        latent_panel(ax, r[when], f"{regime}, {moment}\nperplexity {number(m['perplexity'])}, "
                                  f"{m['dead_tokens']} of {k} dead", max_points)
    for ax in axes.ravel():
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
    for ax, (regime, when, r) in zip(axes.ravel(), panels):
        zoom_inset(ax, r[when], share=0.2, max_points=max_points)
    for ax in axes[-1]:
        ax.set_xlabel("latent dimension 1")
    for ax in axes[:, 0]:
        ax.set_ylabel("latent dimension 2")
    fig.legend(handles=token_legend(), loc="outside upper center", ncol=2, frameon=False,
               title=f"K = {k}; dots: evaluation embeddings, coloured by class")
    return fig


def latent_grid(results: list[tuple[str, dict]], when: str = "final", columns: int | None = 3,
                share: bool = True, max_points: int = 2000) -> plt.Figure:
    """Latent spaces in rows of ``columns`` panels (``None``: one row), one per (title, run
    result); on the same axes unless ``share`` is False (then each panel's own ticks give
    its scale). Three panels a row keep a phone's view legible."""
    columns = min(columns or len(results), len(results))
    rows = math.ceil(len(results) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.15 * rows + 0.8), squeeze=False,
                             sharex=share, sharey=share, layout="constrained")
    for ax, (title, r) in zip(axes.ravel(), results):
        latent_panel(ax, r[when], title, max_points)
    for ax in axes.ravel()[len(results):]:
        ax.axis("off")
    if share:
        xlim, ylim = extent([p for _, r in results for p in embeddings_and_tokens(r[when], max_points)])
        for ax in axes.ravel()[:len(results)]:
            ax.set_xlim(xlim)
            ax.set_ylim(ylim)
    for ax in axes[-1]:
        ax.set_xlabel("latent dim. 1")
    for ax in axes[:, 0]:
        ax.set_ylabel("latent dim. 2")
    fig.legend(handles=token_legend(), loc="outside upper center", ncol=2, frameon=False,
               title="dots: evaluation embeddings, coloured by class")
    return fig


# --- metrics against a swept parameter, and over training ------------------------------

def metrics_against(df: pd.DataFrame, x: str, metrics: list[str], log2: bool = True,
                    labels: dict | None = None, references: dict | None = None,
                    hue: str | None = "regime", styles: dict | None = None, column: str | None = None,
                    bounds: dict | None = None, title: str | None = None) -> plt.Figure:
    """Each metric against ``x``, one line per ``hue`` value (:func:`line_styles`, or
    ``styles``): mean over seeds with its band of one standard deviation clipped to what
    the metric can be (shaded; with more than :data:`MANY_LINES` lines, a bar at each
    point, the points set a little apart). ``references`` maps a metric to ``[(name,
    value), ...]``: horizontal reference lines (a noise floor, an unquantized model), drawn
    grey, dashed and named in the legend. Panels two a row (a third metric's row holds
    the legend); with ``column``, one column per value of ``column`` (titled) and one row
    per metric, rows sharing their y axis. ``bounds`` maps a metric to its (low, high)
    where :data:`BOUNDS` does not know it; ``title`` heads the legend."""
    styles = styles or line_styles(hue_values(df, hue))
    many = len(styles) > MANY_LINES
    columns = list(dict.fromkeys(df[column])) if column else [None]
    if column:
        fig, grid = plt.subplots(len(metrics), len(columns), squeeze=False, sharey="row", layout="constrained",
                                 figsize=(PANEL[0] * len(columns), PANEL[1] * len(metrics)
                                          + legend_height([str(v) for v in styles], PANEL[0] * len(columns))))
        panels = [(grid[i, j], metric, value) for i, metric in enumerate(metrics) for j, value in enumerate(columns)]
        axes, slot = list(grid.ravel()), None
    else:
        fig, axes, slot = panel_grid(len(metrics), top=0.0 if len(metrics) % 2 else 0.7)
        panels = [(ax, metric, None) for ax, metric in zip(axes, metrics)]
    refs_style = ["--", ":", "-."]
    shown = {}  # metric -> every value drawn for it (a row of panels shares its scale)
    for ax, metric, value in panels:
        data = df if value is None else df[df[column] == value]
        stats = draw_lines(ax, data, x, metric, hue, styles, band="bars" if many else "fill",
                           dodge=("log" if log2 else "linear") if many else None, bounds=(bounds or {}).get(metric))
        shown.setdefault(metric, []).extend(list(stats["lo"]) + list(stats["hi"]) + list(stats["mean"]))
        for i, (name, ref) in enumerate((references or {}).get(metric, [])):
            ax.axhline(ref, color="0.35", linestyle=refs_style[i % len(refs_style)], linewidth=1.3, label=name)
            shown[metric].append(ref)
    for ax, metric, value in panels:  # scales and limits once every panel of a row is drawn
        set_scale(ax, shown[metric], percent=metric in PERCENT)
        keep_within(ax, metric, (bounds or {}).get(metric))
        swept_axis(ax, df[x], log2)
        if value is None or metric == metrics[-1]:
            ax.set_xlabel(axis_label(x, labels))
        if value is None or value == columns[0]:
            ax.set_ylabel(axis_label(metric, labels))
        if value is not None and metric == metrics[0]:
            ax.set_title(f"{label(column, labels)}: {value}")
    figure_legend(fig, axes, slot=slot, title=title)
    return fig


def quantization_starts(curves: pd.DataFrame, hue: str | None) -> dict:
    """The first step with a codebook (a perplexity) of each ``hue`` value that starts
    quantizing after the first step of the curves (pretraining first)."""
    if "perplexity" not in curves:
        return {}
    start = curves.step.min()
    quantized = curves.dropna(subset=["perplexity"])
    groups = quantized.groupby(hue, observed=True) if hue else [(None, quantized)]
    return {value: g.step.min() for value, g in groups if len(g) and g.step.min() > start}


def training_curves(curves: pd.DataFrame, metrics: list[str], labels: dict | None = None,
                    hue: str | None = "regime", styles: dict | None = None, row: str | None = None,
                    ordered: bool = False, title: str | None = None) -> plt.Figure:
    """Metrics over training steps, one line per ``hue`` value (mean over seeds, band of
    one standard deviation clipped to what the metric can be; with more than
    :data:`MANY_LINES` lines, no bands, which would cover each other): where tokens die,
    and when. Autoencoder steps have no codebook, so quantizer metrics start where
    quantization does; a dotted line in a line's colour marks it for a line that starts
    late (one legend entry says so). Panels two a row; with ``row``, one row per value of
    ``row`` (titled). ``ordered``: the hue values are an order (a colour ramp); ``title``
    heads the legend."""
    styles = styles or line_styles(hue_values(curves, hue), ordered=ordered)
    many = len(styles) > MANY_LINES
    rows = list(dict.fromkeys(curves[row])) if row else [None]
    if row:
        fig, grid = plt.subplots(len(rows), len(metrics), squeeze=False, layout="constrained", sharex=True,
                                 figsize=(PANEL[0] * len(metrics), PANEL[1] * len(rows)
                                          + legend_height([str(v) for v in styles] + ["x" * 40], PANEL[0] * len(metrics))))
        panels = [(grid[i, j], metric, value) for i, value in enumerate(rows) for j, metric in enumerate(metrics)]
        axes, slot = list(grid.ravel()), None
    else:
        fig, axes, slot = panel_grid(len(metrics), top=0.0 if len(metrics) % 2 else 0.8)
        panels = [(ax, metric, None) for ax, metric in zip(axes, metrics)]
    marked = False
    for ax, metric, value in panels:
        part = curves if value is None else curves[curves[row] == value]
        draw_lines(ax, part, "step", metric, hue, styles, band=None if many else "fill", markers=many,
                   markevery=0.2 if many else None)
        if metric != "perplexity":
            for v, first in quantization_starts(part, hue).items():
                ax.axvline(first, color=styles[v]["color"] if v in styles else "0.4", linestyle=":", linewidth=1.3)
                marked = True
        set_scale(ax, part[metric].dropna(), percent=metric in PERCENT)
        keep_within(ax, metric)
        ax.set_ylabel(axis_label(metric, labels))
        ax.set_xlabel("training step")
        if value is not None:
            ax.set_title(f"{value}", loc="left")
    extra = [Line2D([], [], color="0.3", linestyle=":", linewidth=1.3,
                    label="quantization starts (dotted, in its line's colour)")] if marked else []
    figure_legend(fig, axes, slot=slot, extra=extra, title=title)
    return fig


def runs_scatter(df: pd.DataFrame, x: str, ys: list[str], hue: str, style: str | None = None,
                 labels: dict | None = None, log_x: bool = False, styles: dict | None = None) -> plt.Figure:
    """One point per run: each of ``ys`` against ``x`` (a property of the run against
    what it led to), in the colour and marker of its ``hue`` value (:func:`line_styles`,
    or ``styles``; ``style`` is accepted for callers that named a second grouping, which
    the styles then carry), small and half transparent, so that runs on top of each other
    still show; ``log_x`` for a property that spans decades (negative values are not
    allowed there)."""
    styles = styles or line_styles(hue_values(df, hue))
    shown = [v for v in styles if (df[hue] == v).any()]
    fig, axes, slot = panel_grid(len(ys), top=0.0 if len(ys) % 2 else legend_height([str(v) for v in shown],
                                                                                     COLUMNS * PANEL[0]))
    for ax, y in zip(axes, ys):
        for value in shown:
            s, part = styles[value], df[df[hue] == value]
            reference = s.get("marker") == "*"
            ax.scatter(part[x], part[y], color=s["color"], marker=s["marker"], s=90 if reference else 34,
                       alpha=0.9 if reference else 0.7, linewidths=0.4, edgecolors="white", zorder=s.get("zorder", 3))
        if log_x:
            ax.set_xscale("log")
            plain_ticks(ax.xaxis)
        set_scale(ax, df[y], percent=y in PERCENT)
        ax.set_xlabel(axis_label(x, labels))
        ax.set_ylabel(axis_label(y, labels))
    handles = [Line2D([], [], linestyle="none", color=styles[v]["color"], marker=styles[v]["marker"],
                      markersize=9 if styles[v].get("marker") == "*" else 7, label=str(v)) for v in shown]
    figure_legend(fig, axes, slot=slot, extra=handles)
    return fig


def representations_against(df: pd.DataFrame, x: str, columns: list[str], labels: dict | None = None,
                            chance: float | None = None, log2: bool = True, panel: str = "regime") -> plt.Figure:
    """One panel per regime (``panel``), one line per representation: the same probe's
    accuracy on each of ``columns`` against ``x`` (mean over seeds, band of one standard
    deviation within 0–100%), on one shared axis in percent **zoomed to the data**, so
    that the few points between representations and regimes that decide a verdict show;
    the chance level dashed where it falls on the axis, else named in the legend as
    below it. What quantization keeps of what the continuous embeddings carry, read
    across a panel."""
    names = [label(c, labels) for c in columns]
    long = df.melt(id_vars=[x, panel, "seed"], value_vars=columns, var_name="representation", value_name="accuracy")
    long["representation"] = pd.Categorical(long["representation"].map(dict(zip(columns, names))), names,
                                            ordered=True)
    values = sorted(long[panel].unique())
    fig, axes, _ = panel_grid(len(values), legend_slot=False, sharey=True, top=0.9)
    styles = line_styles(names)
    low, high = [], []
    for ax, value in zip(axes, values):
        stats = draw_lines(ax, long[long[panel] == value], x, "accuracy", "representation", styles,
                           bounds=(0.0, 1.0))
        low.append(stats.lo.min())
        high.append(stats.hi.max())
        set_scale(ax, long.accuracy, percent=True)
        swept_axis(ax, long[x], log2)
        ax.set_title(f"{label(panel, labels)}: {value}", color=REGIME_COLORS.get(value, "black"))
        ax.set_xlabel(axis_label(x, labels))
    lo, hi = min(low), max(high)
    pad = max(0.12 * (hi - lo), 0.004)
    bottom, top = max(0.0, lo - pad), min(1.0 + pad / 3, hi + pad)
    extra = []
    if chance is not None and bottom <= chance <= top:
        for ax in axes:
            ax.axhline(chance, color="0.35", linestyle="--", linewidth=1.2, label="chance")
    elif chance is not None:
        extra = [Line2D([], [], color="none", label=f"chance, {100 * chance:g}%: below the axis")]
    for ax in axes:
        ax.set_ylim(bottom, top)
    axes[0].set_ylabel("held-out probe accuracy")
    figure_legend(fig, axes, extra=extra)
    return fig


def methods_dotplot(df: pd.DataFrame, method: str, metrics: list[str], order: list, hue: str = "regime",
                    labels: dict | None = None, bounds: dict | None = None,
                    references: dict | None = None) -> plt.Figure:
    """One row per method (in ``order``, top to bottom), one panel per metric: each seed
    a small dot, the mean over seeds a larger marker with a bar of one standard deviation
    (clipped to what the metric can be), coloured by ``hue``. Methods on their own row
    never hide each other, as they would on a scatter of one metric against another.
    ``references`` maps a metric to ``[(name, value), ...]``: vertical dashed lines (a
    rule's threshold)."""
    styles = line_styles(hue_values(df, hue))
    fig, axes = plt.subplots(1, len(metrics), sharey=True, squeeze=False, layout="constrained",
                             figsize=(PANEL[0] * len(metrics) + 0.2, 0.3 * len(order) + 1.6))
    axes = list(axes.ravel())
    row_of = {m: i for i, m in enumerate(order)}
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, metrics):
        limits = (bounds or {}).get(metric)
        stats = band_stats(df, [method, hue], metric, limits)
        part = df[df[method].isin(row_of)]
        jitter = rng.uniform(-0.15, 0.15, len(part))
        for value, s in styles.items():
            mine = (part[hue] == value).to_numpy()
            ax.scatter(part[metric][mine], part[method][mine].map(row_of) + jitter[mine], s=14, color=s["color"],
                       alpha=0.45, linewidths=0)
            g = stats[(stats[hue] == value) & stats[method].isin(row_of)]
            ys = g[method].map(row_of)
            ax.hlines(ys, g.lo, g.hi, color=s["color"], linewidth=1.4)
            ax.scatter(g["mean"], ys, s=44, color=s["color"], marker=s["marker"], edgecolors="white",
                       linewidths=0.6, zorder=4, label=str(value))
        for name, value in (references or {}).get(metric, []):
            ax.axvline(value, color="0.35", linestyle="--", linewidth=1.2, label=name)
        set_scale(ax, df[metric], which="x", percent=metric in PERCENT)
        ax.set_xlabel(axis_label(metric, labels))
        ax.grid(axis="y", color="0.9", linewidth=0.8)
        ax.set_axisbelow(True)
    axes[0].set_yticks(range(len(order)))
    axes[0].set_yticklabels(order, fontsize=10.5)
    axes[0].set_ylim(len(order) - 0.5, -0.5)
    figure_legend(fig, axes, title=label(hue, labels))
    return fig


def token_use_histogram(counts: dict, k: int) -> plt.Figure:
    """How many tokens are used how often on the evaluation set, per regime. Dead tokens
    (0 uses) get their own bar on the left; the rest are binned on a log scale."""
    fig, ax = plt.subplots(figsize=(5.4, 3.4), layout="constrained")
    top = max(int(c.max()) for c in counts.values())
    bins = np.concatenate([[-0.5, 0.5], np.logspace(0, np.log10(top + 1), 25) + 0.5])
    styles = line_styles(list(counts))
    for regime, c in counts.items():
        ax.hist(c.numpy(), bins=bins, histtype="step", linewidth=1.8, label=regime, color=styles[regime]["color"],
                linestyle=styles[regime]["linestyle"])
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yscale("log")
    plain_ticks(ax.xaxis)
    plain_ticks(ax.yaxis)
    ax.set_xlabel(f"times a token is the nearest one on the\nevaluation set (K = {k}; 0 = dead)")
    ax.set_ylabel("number of tokens")
    ax.legend(title="regime", frameon=False)
    return fig


def reconstruction_grid(originals: torch.Tensor, reconstructions: dict, to_image, per_row: int = 6) -> plt.Figure:
    """Test images and each regime's reconstructions of them, in blocks of ``per_row``
    images: a row of originals, then one row per regime under it, so each reconstruction
    sits below its original. ``to_image`` maps model-space images to [0, 1]. Six images a
    row keep them large enough on a phone."""
    rows = [("test image", originals.float() / 255)] + [(r, to_image(x).clamp(0, 1)) for r, x in reconstructions.items()]
    n = len(originals)
    blocks = math.ceil(n / per_row)
    fig = plt.figure(figsize=(1.0 * per_row + 1.3, (1.0 * len(rows) + 0.3) * blocks), layout="constrained")
    grid = fig.add_gridspec(blocks * len(rows), per_row)
    for b in range(blocks):
        for r, (name, images) in enumerate(rows):
            for i in range(per_row):
                ax = fig.add_subplot(grid[b * len(rows) + r, i])
                ax.set_xticks([])
                ax.set_yticks([])
                index = b * per_row + i
                if index < n:
                    ax.imshow(images[index].permute(1, 2, 0).numpy(), interpolation="nearest")
                else:
                    ax.axis("off")
                if i == 0:
                    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=12)
                if r == 0 and index < n:
                    ax.set_title(f"#{index + 1}", fontsize=10, pad=2)
    return fig


def save_lead(fig: plt.Figure, notebook: str, folder=".") -> None:
    """Save a chapter's lead figure beside its executed notebook (the working directory
    when the book executes it), where the introduction's summary shows it
    (:func:`vqstudy.scorecard.lead_figure` names the file). Returns nothing, so that a
    notebook cell ending with it shows only the figure."""
    from vqstudy import scorecard

    fig.savefig(Path(folder) / scorecard.lead_figure(notebook), dpi=110, bbox_inches="tight")


# --- tables ----------------------------------------------------------------------------

def summary_table(df: pd.DataFrame, by, metrics: list[str], labels: dict | None = None,
                  hue: str = "regime", title: str = ""):
    """Mean ± standard deviation over seeds per (``by``, regime), for reading: headers in
    words with units, 3 significant digits of a column's smallest value and the same
    decimals down the column (:func:`column_places`), ``mean ± sd`` in one cell, the
    number of seeds in the caption (the mean alone when there is one seed). ``by`` is a
    column or a list of columns; ``title`` opens the caption. Returns a pandas Styler (the
    notebook shows it)."""
    keys = ([by] if isinstance(by, str) else list(by)) + ([hue] if hue in df else [])
    scaled = in_percent(df, metrics)
    g = scaled.groupby(keys, sort=True)[metrics]
    mean, sd, n = g.mean(), g.std(), g.count()
    places = {m: column_places(mean[m], sd[m]) for m in metrics}  # one precision per column
    seeds = sorted(set(n.to_numpy().ravel().tolist()))
    rows = []
    previous = None
    for index in mean.index:
        key = index if isinstance(index, tuple) else (index,)
        # a group's value is written once, on its first row
        shown = ["" if previous is not None and key[:i + 1] == previous[:i + 1] else str(v) for i, v in enumerate(key)]
        previous = key
        rows.append(shown + [mean_sd(mean.loc[index, m], sd.loc[index, m], int(n.loc[index, m]), places[m])
                             for m in metrics])
    names = {**{k: KEY_LABELS.get(k, label(k, labels)) for k in keys}, **{m: header(m, labels) for m in metrics}}
    table = pd.DataFrame(rows, columns=[names[c] for c in keys + metrics])
    if seeds == [1]:
        caption = "One seed (n = 1): each value is one run."
    elif len(seeds) == 1:
        caption = f"Mean ± standard deviation over n = {seeds[0]} seeds."
    else:
        caption = f"Mean ± standard deviation over n = {', '.join(map(str, seeds))} seeds (rows differ)."
    caption = f"{title}. {caption}" if title else caption
    classes = pd.DataFrame([["vq-key"] * len(keys) + ["vq-num"] * len(metrics)] * len(table), columns=table.columns)
    return (table.style.hide(axis="index").set_caption(caption).set_td_classes(classes)
            .set_table_attributes('class="vq-table"'))


# --- longer training: metrics, verdicts and times against the schedule (chapter longer_training) ---

LINE_STYLES = ["-", "--", ":", "-."]
LINE_MARKERS = ["o", "s", "^", "D"]


def seed_band(runs: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of ``metric`` per ``keys`` and
    ``total_steps``, with the band ``lo``–``hi`` (mean ± sd) clipped to :data:`BOUNDS`."""
    return band_stats(runs, keys + ["total_steps"], metric)


def steps_axis(ax, steps) -> None:
    """A log axis of training steps with a plain tick at each schedule's step count."""
    steps = sorted(set(int(s) for s in steps))
    ax.set_xscale("log")
    ax.set_xticks(steps)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    if len(steps) == 1:
        ax.set_xlim(steps[0] / 2, steps[0] * 2)
    else:
        ax.set_xlim(steps[0] / 1.4, steps[-1] * 1.4)


def against_schedule(runs: pd.DataFrame, metrics: list[str], line: str, column: str | None = None,
                     labels: dict | None = None, line_name: str | None = None) -> plt.Figure:
    """Final metrics against the number of training steps (log scale): a line per regime
    (colour) and value of ``line`` (line style and marker), mean over seeds with a band of
    one standard deviation clipped to what the metric can be (:data:`BOUNDS`: usage
    within 0–100%, perplexity at least 1), drawn as a shaded band between schedules and a
    bar at each (the lines' points are set a little apart, so bars at one schedule do not
    hide each other). Panels two a row (a third metric's place holds the legend); with ``column``, one row per metric
    and one column per value of ``column`` (in order of appearance), rows sharing their
    axis. ``runs`` is the run tables of several schedules in one
    (``vqstudy.recorded.schedule_runs``)."""
    columns = list(dict.fromkeys(runs[column])) if column else [None]
    if column:
        fig, grid = plt.subplots(len(metrics), len(columns), figsize=(PANEL[0] * len(columns),
                                 PANEL[1] * len(metrics) + 1.4), squeeze=False, layout="constrained", sharey="row")
        axes, slot, bottom = list(grid.ravel()), None, list(grid[-1])

        def panel(i, j):
            return grid[i, j]
    else:  # two panels a row, the legend in the place a third metric leaves
        fig, axes, slot = panel_grid(len(metrics), top=0.0 if len(metrics) % 2 else 1.4)
        bottom = axes

        def panel(i, j):
            return axes[i]
    values = sorted(runs[line].unique())
    name = line_name or KEY_LABELS.get(line, label(line, labels))
    lines = [(r, v) for r in sorted(runs.regime.unique()) for v in values]
    # every panel's bands first, so that a row's shared axis holds all of them
    bands = {(i, j): seed_band(runs if value is None else runs[runs[column] == value], ["regime", line], metric)
             for j, value in enumerate(columns) for i, metric in enumerate(metrics)}
    for j, value in enumerate(columns):
        for i, metric in enumerate(metrics):
            ax = panel(i, j)
            band = bands[(i, j)]
            for (regime, v), g in band.groupby(["regime", line]):
                k = values.index(v)
                color = REGIME_COLORS.get(regime)
                dodge = 1.06 ** (lines.index((regime, v)) - (len(lines) - 1) / 2)  # multiplicative: a log axis
                x = g.total_steps * dodge
                ax.plot(x, g["mean"], color=color, linestyle=LINE_STYLES[k % 4], marker=LINE_MARKERS[k % 4],
                        markersize=5, label=f"{regime}, {name} = {v}")
                if (g["count"] > 1).any():
                    ax.vlines(x, g.lo, g.hi, color=color, linewidth=1.2, alpha=0.7)
                    ax.fill_between(x, g.lo, g.hi, color=color, alpha=0.12, linewidth=0)
            steps_axis(ax, runs.total_steps)
            row = [bands[(i, jj)] for jj in (range(len(columns)) if column else [j])]
            values_shown = pd.concat([b[c] for b in row for c in ("lo", "hi", "mean")])
            set_scale(ax, values_shown, percent=metric in PERCENT)
            if metric in PERCENT:
                ax.set_ylim(max(-0.02, values_shown.min() - 0.05), min(1.03, values_shown.max() + 0.05))
            if j == 0:
                ax.set_ylabel(axis_label(metric, labels))
            if ax in bottom:
                ax.set_xlabel("training steps (log scale)")
            if value is not None and i == 0:
                ax.set_title(f"{label(column, labels)}: {value}")
    figure_legend(fig, axes, slot=slot)
    return fig


def lead_against_schedule(lead: pd.DataFrame, per_seed: pd.DataFrame, threshold: float = 0.02) -> plt.Figure:
    """C3's deciding numbers against the number of training steps (log scale): left,
    pretrain's lead over baseline at each K (seed means as lines, each seed as a dot; at
    or below 0 baseline has caught up); right, baseline's MSE gain from the smallest to
    the largest K (C3b holds below the dashed threshold). ``lead`` and ``per_seed`` as
    ``vqstudy.recorded.c3_lead`` and ``c3_lead_per_seed`` give them."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 4.6), layout="constrained")
    ks = sorted(int(c.split("_")[1]) for c in lead.columns if c.startswith("lead_"))
    colors = sns.color_palette("viridis", len(ks))
    for k, color in zip(ks, colors):
        left.plot(lead.steps, lead[f"lead_{k}"], color=color, marker="o", label=f"K = {k}")
        seeds = per_seed[per_seed.codebook_size == k]
        left.scatter(seeds.steps, seeds.lead, color=color, s=12, alpha=0.5)
    left.axhline(0, color="0.35", linestyle="--", linewidth=1, label="no lead: baseline\nhas caught up")
    left.set_ylabel("pretrain's lead over baseline\n1 − MSE(pretrain) / MSE(baseline)")
    right.plot(lead.steps, lead.baseline_gain, color=REGIME_COLORS["baseline"], marker="o",
               label=f"baseline's MSE gain, K = {ks[0]} to {ks[-1]}" if ks else "baseline's MSE gain")
    right.axhline(threshold, color="0.35", linestyle=":", linewidth=1,
                  label=f"C3b's threshold ({threshold:.0%}):\nC3b holds below it")
    right.set_ylabel("baseline's MSE gain from\nthe smallest to the largest K")
    for ax in (left, right):
        steps_axis(ax, lead.steps)
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{100 * v:g}%"))
        ax.set_xlabel("training steps (log scale)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=10,
                  ncol=2 if ax is left and len(ks) > 2 else 1)
    return fig


def glue_figure(name: str, fig: plt.Figure) -> None:
    """Glue ``fig`` for a ``{glue:figure}`` (numbered, with caption and alt text) and
    close it, so that the cell does not also show it."""
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


def not_recorded(text: str) -> plt.Figure:
    """A figure's place when its data is not recorded yet: the reason, in words."""
    fig, ax = plt.subplots(figsize=(7.0, 1.2), layout="constrained")
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True)
    return fig


def verdict_schedule_table(table: pd.DataFrame, cell) -> "pd.io.formats.style.Styler":
    """Verdicts (rows) by schedule (columns) from ``vqstudy.recorded.verdicts_by_schedule``;
    ``cell`` writes one row of it in words (``vqstudy.recorded.cell_text``). A header
    names the schedule and each chapter's number of steps there."""
    claims_order = list(dict.fromkeys(table.claim))
    schedules = sorted(table.schedule.unique())
    columns = {}
    for s in schedules:
        at = table[table.schedule == s].drop_duplicates("chapter")
        steps = at.groupby("steps", sort=True).claim.apply(lambda c: ", ".join(x.rstrip("abh") for x in c))
        columns[s] = f"×{s}" + (" (quick)" if s == 1 else "") + ": " + "; ".join(
            f"{n} steps ({who})" for n, who in steps.items())
    rows = []
    for claim in claims_order:
        mine = table[table.claim == claim].set_index("schedule")
        title = mine.title.iloc[0]
        rows.append([f"{claim}" + (f" · {title}" if title else "")]
                    + [verdict_cell(mine.loc[s].to_dict(), cell) for s in schedules])
    frame = pd.DataFrame(rows, columns=["verdict"] + [columns[s] for s in schedules])
    return (frame.style.hide(axis="index").set_table_attributes('class="vq-table vq-verdicts"')
            .set_table_styles([{"selector": "th", "props": "text-align: left; max-width: none;"},
                               {"selector": "td", "props": "vertical-align: top;"}])
            .set_caption("Each verdict judged again with today's rules on the record's stored run tables; "
                         "conditions held, steps of the runs judged, and how many of them converged."))


def verdict_cell(row: dict, cell) -> str:
    """One cell of :func:`verdict_schedule_table`: the outcome first (✓ / ✗), in bold."""
    text = cell(row)
    if row["state"] != "recorded":
        return f"<em>{text}</em>"
    mark = "✓" if row["holds"] else "✗"
    head, rest = text.split(" (", 1)
    return f"<strong>{mark} {head}</strong> ({rest}"


def lead_table(lead: pd.DataFrame, per_seed: pd.DataFrame) -> "pd.io.formats.style.Styler":
    """``vqstudy.recorded.c3_lead`` as a table: per schedule, pretrain's lead at each K
    (seed means, ± the sd of the per-seed leads), baseline's MSE gain and where baseline
    has caught up."""
    ks = sorted(int(c.split("_")[1]) for c in lead.columns if c.startswith("lead_"))
    rows = []
    for r in lead.to_dict("records"):
        seeds = per_seed[per_seed.schedule == r["schedule"]]
        cells = []
        for k in ks:
            spread = seeds[seeds.codebook_size == k].lead
            cells.append(mean_sd(100 * r[f"lead_{k}"], 100 * spread.std(), len(spread)))
        rows.append([f"×{r['schedule']}", str(r["steps"]), *cells, number(100 * r["baseline_gain"]),
                     ", ".join(map(str, r["caught_up"])) or "nowhere"])
    names = (["schedule", "steps"] + [f"pretrain's lead at K = {k} (%)" for k in ks]
             + [f"baseline's MSE gain, K = {ks[0]} → {ks[-1]} (%)" if ks else "baseline's MSE gain (%)",
                "baseline caught up at K"])
    frame = pd.DataFrame(rows, columns=names)
    classes = pd.DataFrame([["vq-key"] + ["vq-num"] * (len(names) - 1)] * len(frame), columns=names)
    return (frame.style.hide(axis="index").set_td_classes(classes).set_table_attributes('class="vq-table"')
            .set_caption("Lead: 1 − MSE(pretrain) / MSE(baseline) of the seed means (C3a's statistic), ± the standard "
                         "deviation of the lead computed in each seed alone. Gain: 1 − MSE(largest K) / MSE(smallest "
                         "K) of baseline's seed means (C3b's statistic; C3b holds below 2%). Caught up: the K at which "
                         "baseline's seed-mean MSE is no higher than pretrain's (a lead of 0 or less)."))


def convergence_distance_table(far: pd.DataFrame, keys: list, tolerances: dict,
                               caption: str = "") -> "pd.io.formats.style.Styler":
    """``vqstudy.recorded.distance_to_convergence`` as a table: per regime and swept value,
    each metric's median change over the last quarter of the steps (the largest in any seed
    after it), marked when its median is outside the convergence rule's tolerance."""
    rows = []
    for r in far.to_dict("records"):
        cells = [f"{r[f'{m}_change']:+.1%} ({r[f'{m}_largest']:.1%})" + ("" if abs(r[f"{m}_change"]) < tol else " ✗")
                 for m, tol in tolerances.items()]
        rows.append([str(r[k]) for k in keys] + cells + [f"{r['converged']} of {r['seeds']}"])
    names = (list(keys) + [f"{'MSE' if m == 'mse' else m} change, median (largest) [tolerance {tol:.0%}]"
                           for m, tol in tolerances.items()]
             + ["seeds converged"])
    frame = pd.DataFrame(rows, columns=names)
    classes = pd.DataFrame([["vq-key"] * len(keys) + ["vq-num"] * (len(names) - len(keys))] * len(frame), columns=names)
    return (frame.style.hide(axis="index").set_td_classes(classes).set_table_attributes('class="vq-table"')
            .set_caption(caption))


def timings_table(times: pd.DataFrame, wall) -> "pd.io.formats.style.Styler":
    """The parts of a record and their times (``vqstudy.recorded.timings``): the wall time of
    the sitting that finished each part (training and notebook) and its training summed over
    its runs, whole across sittings; ``wall`` writes seconds in words."""
    def last_sitting(r) -> str:
        if r["state"] != "recorded":
            return "running"
        sittings = r.get("sittings", 1) or 1
        return wall(r["wall_seconds"]) + (f" (the last of {sittings} sittings, from "
                                          f"{(r.get('first_started') or '')[:16].replace('T', ' ')})"
                                          if sittings > 1 else "")

    rows = [[r["chapter"], f"×{r['schedule']}", str(r["steps"]), str(r["runs"]), last_sitting(r),
             wall(r.get("run_seconds") or 0), (r["finished"] or "")[:16].replace("T", " ")]
            for r in times.to_dict("records")]
    names = ["chapter", "schedule", "steps", "runs", "wall time", "training summed over runs", "finished (UTC)"]
    frame = pd.DataFrame(rows, columns=names)
    classes = pd.DataFrame([["vq-key"] + ["vq-num"] * (len(names) - 1)] * len(frame), columns=names)
    classes["wall time"] = "vq-num vq-wrap"  # "(the last of 2 sittings, from ...)" wraps within the column
    return frame.style.hide(axis="index").set_td_classes(classes).set_table_attributes('class="vq-table"')
