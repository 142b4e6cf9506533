"""Figures. Each function draws one kind of figure from run results or a results table
and returns the matplotlib Figure, so a notebook cell is one call."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

REGIME_COLORS = {"baseline": "#d95f02", "pretrain": "#1b9e77"}


def latent_panel(ax, snapshot: dict, title: str, max_points: int = 2000) -> None:
    """2-D embeddings coloured by class, with every token drawn on top: used tokens as
    black crosses, dead ones (never the nearest token on the evaluation set) as red."""
    emb, labels = snapshot["embeddings"][:max_points].numpy(), snapshot["labels"][:max_points].numpy()
    tokens, counts = snapshot["tokens"].numpy(), snapshot["counts"].numpy()
    ax.scatter(emb[:, 0], emb[:, 1], c=labels, cmap="tab10", s=4, alpha=0.5, linewidths=0)
    used = counts > 0
    ax.scatter(tokens[used, 0], tokens[used, 1], marker="x", c="black", s=14, linewidths=0.8, label="used token")
    ax.scatter(tokens[~used, 0], tokens[~used, 1], marker="x", c="red", s=14, linewidths=0.8, label="dead token")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def latent_space(results: dict, k: int) -> plt.Figure:
    """The C1 headline: rows = regimes, columns = at VQ initialisation / after training.
    ``results`` maps regime -> one run result."""
    fig, axes = plt.subplots(len(results), 2, figsize=(8, 4 * len(results)), squeeze=False)
    for row, (regime, r) in enumerate(results.items()):
        for col, when in enumerate(("init", "final")):
            m = r["init_metrics"] if when == "init" else r["metrics"]
            latent_panel(axes[row, col], r[when],
                         f"{regime}, {'at VQ initialisation' if when == 'init' else 'end of training'}\n"
                         f"K={k}: perplexity {m['perplexity']:.1f}, dead {m['dead_tokens']}")
    axes[0, 0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def latent_row(results: list[tuple[str, dict]], when: str = "final") -> plt.Figure:
    """Latent spaces side by side, one panel per (title, run result)."""
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 4), squeeze=False)
    for ax, (title, r) in zip(axes[0], results):
        latent_panel(ax, r[when], title)
    fig.tight_layout()
    return fig


def metrics_against(df: pd.DataFrame, x: str, metrics: list[str], log2: bool = True,
                    labels: dict | None = None) -> plt.Figure:
    """Each metric against ``x``, one line per regime: mean over seeds with a band of
    one standard deviation (seaborn's ``errorbar='sd'``)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(data=df, x=x, y=metric, hue="regime", palette=REGIME_COLORS, marker="o",
                     errorbar="sd", ax=ax, legend=ax is axes[0, 0])
        if log2:
            ax.set_xscale("log", base=2)
        ax.set_ylabel((labels or {}).get(metric, metric))
    fig.tight_layout()
    return fig


def token_use_histogram(counts: dict, k: int) -> plt.Figure:
    """How many tokens are used how often on the evaluation set, per regime. Dead tokens
    (0 uses) get their own bar on the left; the rest are binned on a log scale."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    top = max(int(c.max()) for c in counts.values())
    bins = np.concatenate([[-0.5, 0.5], np.logspace(0, np.log10(top + 1), 25) + 0.5])
    for regime, c in counts.items():
        ax.hist(c.numpy(), bins=bins, histtype="step", linewidth=1.5, label=regime, color=REGIME_COLORS.get(regime))
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yscale("log")
    ax.set_xlabel(f"uses of a token on the evaluation set (K={k}; 0 = dead)")
    ax.set_ylabel("number of tokens")
    ax.legend()
    fig.tight_layout()
    return fig


def reconstruction_grid(originals: torch.Tensor, reconstructions: dict, to_image) -> plt.Figure:
    """Rows: the original test images, then each regime's reconstructions, drawn with
    torchvision's ``make_grid``. ``to_image`` maps model-space images to [0, 1]."""
    from torchvision.utils import make_grid

    rows = [("original", originals.float() / 255)] + [(r, to_image(x).clamp(0, 1)) for r, x in reconstructions.items()]
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.6 * len(originals) + 1.2, 0.75 * len(rows) + 0.3))
    for ax, (name, images) in zip(axes, rows):
        ax.imshow(make_grid(images, nrow=len(images), padding=1, pad_value=1.0).permute(1, 2, 0).numpy())
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def summary_table(df: pd.DataFrame, by, metrics: list[str]) -> pd.DataFrame:
    """Mean ± std over seeds per (``by``, regime), formatted for reading; ``by`` is a
    column or a list of columns."""
    g = df.groupby(([by] if isinstance(by, str) else list(by)) + ["regime"])[metrics]
    mean, std = g.mean(), g.std().fillna(0.0)
    out = mean.astype(object)
    for metric in metrics:
        out[metric] = [f"{m:.4g} ± {s:.2g}" for m, s in zip(mean[metric], std[metric])]
    return out


def training_curves(curves: pd.DataFrame, metrics: list[str], labels: dict | None = None,
                    hue: str = "regime") -> plt.Figure:
    """Metrics over training steps, one line per ``hue`` value (mean over seeds, band of
    one standard deviation): where tokens die, and when. Autoencoder steps have no
    codebook, so quantizer metrics start where quantization does."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 3.2), squeeze=False)
    palette = REGIME_COLORS if hue == "regime" else None
    for ax, metric in zip(axes[0], metrics):
        data = curves.dropna(subset=[metric])
        sns.lineplot(data=data, x="step", y=metric, hue=hue, palette=palette, errorbar="sd", ax=ax,
                     legend=ax is axes[0, 0])
        ax.set_ylabel((labels or {}).get(metric, metric))
        ax.set_xlabel("training step")
    fig.tight_layout()
    return fig
