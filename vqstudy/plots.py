"""Figures and tables. Each function draws one kind of figure from run results or a
results table and returns the matplotlib Figure (or, for tables, a styled table), so a
notebook cell is one call.

Conventions, so that a reader can trust a figure at a glance: every axis has a label in
words (:data:`LABELS`, a notebook may override one), fractions are shown as percentages,
an axis whose values span a decade or more is logarithmic with plain-number ticks, and
panels that compare regimes or moments share their axes.
"""

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import ticker

REGIME_COLORS = {"baseline": "#d95f02", "pretrain": "#1b9e77"}

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
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker="x", color="black", linestyle="none", markersize=6, label="token in use"),
            Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="black", linestyle="none",
                   markersize=6, label="dead token")]


def label(name: str, labels: dict | None = None) -> str:
    return (labels or {}).get(name) or LABELS.get(name) or name.replace("_", " ")


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


def mean_sd(mean: float, sd: float, n: int) -> str:
    """``mean ± sd`` in one unbreakable cell, the spread to the mean's last digit (one
    significant digit when that would round it to 0); the mean alone when ``n`` is 1. A
    tiny mean shares its power of ten with the spread: (3.39 ± 0.15)×10⁻⁸."""
    shown = number(mean)
    if n < 2 or not np.isfinite(sd):
        return shown
    if mean != 0 and abs(mean) < TINY:
        mantissa, exponent = power_of_ten(mean)
        return f"({mean_sd(mantissa, sd / 10 ** exponent, n)})×10{superscript(exponent)}"
    places = 0 if float(mean).is_integer() else decimals(mean)
    if sd > 0 and round(sd, places) == 0:
        places = decimals(sd, 1)
    return f"{shown}\u00a0±\u00a0{sd:.{places}f}"


def in_percent(df: pd.DataFrame, columns) -> pd.DataFrame:
    """A copy with the :data:`PERCENT` columns times 100 (for tables)."""
    scaled = [c for c in columns if c in PERCENT and c in df]
    return df.assign(**{c: df[c] * 100 for c in scaled}) if scaled else df


def plain_ticks(axis) -> None:
    """Tick labels as plain numbers (10, 20, 50, 100), not powers of ten; on a log axis
    at 1, 2 and 5 times each power of ten, so that an axis spanning one decade or two still
    has several labelled ticks."""
    if axis.get_scale() == "log":
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


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
        (ax.yaxis if which == "y" else ax.xaxis).set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
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


def swept_axis(ax, values, log2: bool) -> None:
    """An x axis of swept values (K, widths): log base 2 when asked, a tick at every value."""
    values = sorted(set(pd.Series(values).dropna()))
    if log2:
        ax.set_xscale("log", base=2)
    if len(values) <= 12:
        ax.set_xticks(values)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())


def figure_legend(fig, axes, title: str | None = None) -> None:
    """One legend for the figure, above the panels: every labelled line once."""
    seen = {}
    for ax in np.ravel(axes):
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
        if ax.get_legend():
            ax.get_legend().remove()
    if seen:
        fig.legend(seen.values(), seen.keys(), loc="outside upper center", ncol=min(len(seen), 4),
                   frameon=False, title=title, fontsize=9)


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
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=8)


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
    inset.tick_params(labelsize=6, length=2, pad=1)
    inset.set_title(f"zoom ×{(X1 - X0) / max(x1 - x0, y1 - y0):.0f}", fontsize=7, pad=2)
    ax.indicate_inset_zoom(inset, edgecolor="0.4")


def latent_space(results: dict, k: int, max_points: int = 2000) -> plt.Figure:
    """The C1 headline: rows = regimes, columns = at VQ initialisation / after training,
    all four panels on the same axes (so the untrained encoder's blob looks as small as it
    is, with a magnified inset). ``results`` maps regime -> one run result."""
    panels = [(regime, when, r) for regime, r in results.items() for when in ("init", "final")]
    fig, axes = plt.subplots(len(results), 2, figsize=(8, 4.1 * len(results) + 0.5), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    xlim, ylim = extent([p for _, when, r in panels for p in embeddings_and_tokens(r[when], max_points)])
    for ax, (regime, when, r) in zip(axes.ravel(), panels):
        m = r["init_metrics"] if when == "init" else r["metrics"]
        moment = "at VQ initialisation" if when == "init" else "end of training"
        latent_panel(ax, r[when], f"{regime}, {moment}\nperplexity {number(m['perplexity'])}, "
                                  f"dead tokens {m['dead_tokens']} of {k}", max_points)
    for ax in axes.ravel():
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
    for ax, (regime, when, r) in zip(axes.ravel(), panels):
        zoom_inset(ax, r[when], share=0.2, max_points=max_points)
    for ax in axes[-1]:
        ax.set_xlabel("latent dimension 1")
    for ax in axes[:, 0]:
        ax.set_ylabel("latent dimension 2")
    fig.legend(handles=token_legend(), loc="outside upper center", ncol=2, frameon=False, fontsize=9,
               title=f"K = {k}; dots: evaluation embeddings, coloured by class")
    return fig


def latent_grid(results: list[tuple[str, dict]], when: str = "final", columns: int | None = 4,
                share: bool = True, max_points: int = 2000) -> plt.Figure:
    """Latent spaces in rows of ``columns`` panels (``None``: one row), one per (title, run
    result); on the same axes unless ``share`` is False (then each panel's own ticks give
    its scale)."""
    columns = columns or len(results)
    rows = math.ceil(len(results) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.1 * rows + 0.5), squeeze=False,
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
        ax.set_xlabel("latent dimension 1")
    for ax in axes[:, 0]:
        ax.set_ylabel("latent dimension 2")
    fig.legend(handles=token_legend(), loc="outside upper center", ncol=2, frameon=False, fontsize=9,
               title="dots: evaluation embeddings, coloured by class")
    return fig


# --- metrics against a swept parameter, and over training ------------------------------

def metrics_against(df: pd.DataFrame, x: str, metrics: list[str], log2: bool = True,
                    labels: dict | None = None, references: dict | None = None,
                    hue: str = "regime") -> plt.Figure:
    """Each metric against ``x``, one line per regime: mean over seeds with a band of
    one standard deviation (seaborn's ``errorbar='sd'``). ``references`` maps a metric to
    ``[(name, value), ...]``: horizontal reference lines (a noise floor, an unquantized
    model), drawn dashed and named in the legend."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.5), squeeze=False,
                             layout="constrained")
    palette = REGIME_COLORS if hue == "regime" else None
    styles = ["--", ":", "-."]
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(data=df, x=x, y=metric, hue=hue, palette=palette, marker="o", errorbar="sd", ax=ax)
        values = list(df[metric])
        for i, (name, value) in enumerate((references or {}).get(metric, [])):
            ax.axhline(value, color="0.35", linestyle=styles[i % len(styles)], linewidth=1, label=name)
            values.append(value)
        set_scale(ax, values, percent=metric in PERCENT)
        swept_axis(ax, df[x], log2)
        ax.set_xlabel(label(x, labels))
        ax.set_ylabel(label(metric, labels))
    figure_legend(fig, axes)
    return fig


def training_curves(curves: pd.DataFrame, metrics: list[str], labels: dict | None = None,
                    hue: str = "regime") -> plt.Figure:
    """Metrics over training steps, one line per ``hue`` value (mean over seeds, band of
    one standard deviation): where tokens die, and when. Autoencoder steps have no
    codebook, so quantizer metrics start where quantization does (a dotted line marks it
    for a regime that starts late)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 3.5), squeeze=False,
                             layout="constrained")
    palette = REGIME_COLORS if hue == "regime" else None
    start = curves.step.min()
    for ax, metric in zip(axes[0], metrics):
        data = curves.dropna(subset=[metric])
        sns.lineplot(data=data, x="step", y=metric, hue=hue, palette=palette, errorbar="sd", ax=ax)
        if "perplexity" in curves and metric != "perplexity":
            for value, group in curves.dropna(subset=["perplexity"]).groupby(hue):
                first = group.step.min()
                if first > start:
                    ax.axvline(first, color=(palette or {}).get(value, "0.4"), linestyle=":", linewidth=1,
                               label=f"{value}: quantization starts")
        set_scale(ax, data[metric], percent=metric in PERCENT)
        ax.set_ylabel(label(metric, labels))
        ax.set_xlabel("training step")
    figure_legend(fig, axes)
    return fig


def runs_scatter(df: pd.DataFrame, x: str, ys: list[str], hue: str, style: str | None = None,
                 labels: dict | None = None, log_x: bool = False) -> plt.Figure:
    """One point per run: each of ``ys`` against ``x`` (a property of the run against
    what it led to), coloured by ``hue`` and shaped by ``style``; ``log_x`` for a
    property that spans decades (negative values are not allowed there)."""
    fig, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3.8), squeeze=False, layout="constrained")
    for ax, y in zip(axes[0], ys):
        sns.scatterplot(data=df, x=x, y=y, hue=hue, style=style, s=40, ax=ax)
        if log_x:
            ax.set_xscale("log")
        set_scale(ax, df[y], percent=y in PERCENT)
        ax.set_xlabel(label(x, labels))
        ax.set_ylabel(label(y, labels))
    figure_legend(fig, axes)
    return fig


def representations_against(df: pd.DataFrame, x: str, columns: list[str], labels: dict | None = None,
                            chance: float | None = None, log2: bool = True, panel: str = "regime") -> plt.Figure:
    """One panel per regime (``panel``), one line per representation: the same probe's
    accuracy on each of ``columns`` against ``x`` (mean over seeds, band of one standard
    deviation), on one shared axis in percent, the chance level dashed. What
    quantization keeps of what the continuous embeddings carry, read across a panel."""
    names = [label(c, labels) for c in columns]
    long = df.melt(id_vars=[x, panel, "seed"], value_vars=columns, var_name="representation", value_name="accuracy")
    long["representation"] = long["representation"].map(dict(zip(columns, names)))
    values = sorted(long[panel].unique())
    fig, axes = plt.subplots(1, len(values), figsize=(4.2 * len(values), 3.6), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, value in zip(axes[0], values):
        sns.lineplot(data=long[long[panel] == value], x=x, y="accuracy", hue="representation", hue_order=names,
                     marker="o", errorbar="sd", ax=ax)
        if chance is not None:
            ax.axhline(chance, color="0.35", linestyle="--", linewidth=1, label="chance")
        set_scale(ax, long.accuracy, percent=True)
        swept_axis(ax, long[x], log2)
        ax.set_title(f"{label(panel, labels)}: {value}", fontsize=10, color=REGIME_COLORS.get(value, "black"))
        ax.set_xlabel(label(x, labels))
        ax.set_ylabel("held-out probe accuracy")
    figure_legend(fig, axes)
    return fig


def token_use_histogram(counts: dict, k: int) -> plt.Figure:
    """How many tokens are used how often on the evaluation set, per regime. Dead tokens
    (0 uses) get their own bar on the left; the rest are binned on a log scale."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    top = max(int(c.max()) for c in counts.values())
    bins = np.concatenate([[-0.5, 0.5], np.logspace(0, np.log10(top + 1), 25) + 0.5])
    for regime, c in counts.items():
        ax.hist(c.numpy(), bins=bins, histtype="step", linewidth=1.5, label=regime, color=REGIME_COLORS.get(regime))
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yscale("log")
    plain_ticks(ax.xaxis)
    plain_ticks(ax.yaxis)
    ax.set_xlabel(f"times a token is the nearest one on the evaluation set (K = {k}; 0 = dead)")
    ax.set_ylabel("number of tokens")
    ax.legend(title="regime", frameon=False)
    return fig


def reconstruction_grid(originals: torch.Tensor, reconstructions: dict, to_image, per_row: int = 8) -> plt.Figure:
    """Test images and each regime's reconstructions of them, in blocks of ``per_row``
    images: a row of originals, then one row per regime under it, so each reconstruction
    sits below its original. ``to_image`` maps model-space images to [0, 1]. At a page
    width of about 850 px each image is drawn about 90 px wide."""
    rows = [("test image", originals.float() / 255)] + [(r, to_image(x).clamp(0, 1)) for r, x in reconstructions.items()]
    n = len(originals)
    blocks = math.ceil(n / per_row)
    fig = plt.figure(figsize=(1.05 * per_row + 1.0, (1.05 * len(rows) + 0.25) * blocks), layout="constrained")
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
                    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
                if r == 0 and index < n:
                    ax.set_title(f"#{index + 1}", fontsize=8, pad=2)
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
    words with units, 3 significant digits, ``mean ± sd`` unbreakable in one cell, the
    number of seeds in the caption (the mean alone when there is one seed). ``by`` is a
    column or a list of columns; ``title`` opens the caption. Returns a pandas Styler (the
    notebook shows it)."""
    keys = ([by] if isinstance(by, str) else list(by)) + ([hue] if hue in df else [])
    scaled = in_percent(df, metrics)
    g = scaled.groupby(keys, sort=True)[metrics]
    mean, sd, n = g.mean(), g.std(), g.count()
    seeds = sorted(set(n.to_numpy().ravel().tolist()))
    rows = []
    previous = None
    for index in mean.index:
        key = index if isinstance(index, tuple) else (index,)
        # a group's value is written once, on its first row
        shown = ["" if previous is not None and key[:i + 1] == previous[:i + 1] else str(v) for i, v in enumerate(key)]
        previous = key
        rows.append(shown + [mean_sd(mean.loc[index, m], sd.loc[index, m], int(n.loc[index, m])) for m in metrics])
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

# What a metric can be: a seed band (mean ± sd) is clipped to it.
BOUNDS = {"usage": (0.0, 1.0), "probe_accuracy": (0.0, 1.0), "perplexity": (1.0, None), "mse": (0.0, None),
          "codebook_spread": (0.0, None), "fisher_ratio": (0.0, None), "dead_tokens": (0.0, None)}
LINE_STYLES = ["-", "--", ":", "-."]
LINE_MARKERS = ["o", "s", "^", "D"]


def seed_band(runs: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds of ``metric`` per ``keys`` and
    ``total_steps``, with the band ``lo``–``hi`` (mean ± sd) clipped to :data:`BOUNDS`."""
    g = runs.groupby(keys + ["total_steps"])[metric].agg(["mean", "std", "count"]).reset_index()
    sd = g["std"].fillna(0.0)
    low, high = BOUNDS.get(metric, (None, None))
    g["lo"], g["hi"] = (g["mean"] - sd).clip(lower=low), (g["mean"] + sd).clip(upper=high)
    if low is not None:
        g["hi"] = g["hi"].clip(lower=low)
    return g


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
    hide each other). One panel per metric in a row; with ``column``, one row per metric
    and one column per value of ``column`` (in order of appearance), rows sharing their
    axis. ``runs`` is the run tables of several schedules in one
    (``vqstudy.recorded.schedule_runs``)."""
    columns = list(dict.fromkeys(runs[column])) if column else [None]
    shape = (len(metrics), len(columns)) if column else (1, len(metrics))
    width, height = (3.9, 2.8) if column else (3.2, 2.7)
    fig, axes = plt.subplots(*shape, figsize=(width * shape[1], height * shape[0] + 0.8), squeeze=False,
                             layout="constrained", sharey="row" if column else False)
    values = sorted(runs[line].unique())
    name = line_name or KEY_LABELS.get(line, label(line, labels))
    lines = [(r, v) for r in sorted(runs.regime.unique()) for v in values]
    for j, value in enumerate(columns):
        data = runs if value is None else runs[runs[column] == value]
        for i, metric in enumerate(metrics):
            ax = axes[i, j] if column else axes[0, i]
            band = seed_band(data, ["regime", line], metric)
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
            values_shown = pd.concat([seed_band(runs, ["regime", line], metric)[c] for c in ("lo", "hi")])
            set_scale(ax, values_shown, percent=metric in PERCENT)
            if metric in PERCENT:
                ax.set_ylim(max(0.0, values_shown.min() - 0.05), min(1.0, values_shown.max() + 0.05))
            if j == 0:
                ax.set_ylabel(label(metric, labels))
            if ax in axes[-1]:
                ax.set_xlabel("training steps (log scale)")
            if value is not None and i == 0:
                ax.set_title(f"{label(column, labels)}: {value}", fontsize=10)
    figure_legend(fig, axes)
    return fig


def lead_against_schedule(lead: pd.DataFrame, per_seed: pd.DataFrame, threshold: float = 0.02) -> plt.Figure:
    """C3's deciding numbers against the number of training steps (log scale): left,
    pretrain's lead over baseline at each K (seed means as lines, each seed as a dot; at
    or below 0 baseline has caught up); right, baseline's MSE gain from the smallest to
    the largest K (C3b holds below the dashed threshold). ``lead`` and ``per_seed`` as
    ``vqstudy.recorded.c3_lead`` and ``c3_lead_per_seed`` give them."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.6, 3.9), layout="constrained")
    ks = sorted(int(c.split("_")[1]) for c in lead.columns if c.startswith("lead_"))
    colors = sns.color_palette("viridis", len(ks))
    for k, color in zip(ks, colors):
        left.plot(lead.steps, lead[f"lead_{k}"], color=color, marker="o", label=f"K = {k}")
        seeds = per_seed[per_seed.codebook_size == k]
        left.scatter(seeds.steps, seeds.lead, color=color, s=12, alpha=0.5)
    left.axhline(0, color="0.35", linestyle="--", linewidth=1, label="no lead: baseline has caught up")
    left.set_ylabel("pretrain's lead over baseline\n1 − MSE(pretrain) / MSE(baseline)")
    right.plot(lead.steps, lead.baseline_gain, color=REGIME_COLORS["baseline"], marker="o",
               label=f"baseline's MSE gain, K = {ks[0]} to {ks[-1]}" if ks else "baseline's MSE gain")
    right.axhline(threshold, color="0.35", linestyle=":", linewidth=1,
                  label=f"C3b's threshold ({threshold:.0%}): C3b holds below it")
    right.set_ylabel("baseline's MSE gain from the smallest\nto the largest K")
    for ax in (left, right):
        steps_axis(ax, lead.steps)
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{100 * v:g}%"))
        ax.set_xlabel("training steps (log scale)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=8,
                  ncol=2 if ax is left else 1)
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


def timings_table(times: pd.DataFrame, wall) -> "pd.io.formats.style.Styler":
    """The parts of a record and their times (``vqstudy.recorded.timings``); ``wall``
    writes seconds in words."""
    rows = [[r["chapter"], f"×{r['schedule']}", str(r["steps"]), str(r["runs"]),
             wall(r["wall_seconds"]) if r["state"] == "recorded" else "running",
             wall(r["sweep_seconds"]) if r["state"] == "recorded" else "—",
             (r["finished"] or "")[:16].replace("T", " ")] for r in times.to_dict("records")]
    names = ["chapter", "schedule", "steps", "runs", "wall time", "of which training", "finished (UTC)"]
    frame = pd.DataFrame(rows, columns=names)
    classes = pd.DataFrame([["vq-key"] + ["vq-num"] * (len(names) - 1)] * len(frame), columns=names)
    return frame.style.hide(axis="index").set_td_classes(classes).set_table_attributes('class="vq-table"')
