"""Claim checks (STUDY.md, The claims and their checks).

Each check states its rule as text (shown in the notebook before the numbers), tests it
in every seed, and returns a :class:`Verdict`: holds / does not hold, every condition
with the numbers behind it. :func:`record` writes the verdict as JSON beside the
executed notebook, where the book's scorecard finds it. A rule is never loosened to
make a claim pass.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Condition:
    name: str
    holds: bool
    detail: str


@dataclass
class Verdict:
    claim: str
    title: str
    rule: str
    conditions: list[Condition]
    numbers: dict
    profile: str = ""
    seeds: list = field(default_factory=list)
    notebook: str = ""
    statement: str = ""  # the paper's claim in one sentence, for the scorecard

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.conditions)

    def to_dict(self) -> dict:
        return {**asdict(self), "holds": self.holds}

    def summary(self) -> str:
        lines = [f"{self.claim} {'HOLDS' if self.holds else 'DOES NOT HOLD'} ({self.profile}, seeds {self.seeds})"]
        lines += [f"  [{'x' if c.holds else ' '}] {c.name}: {c.detail}" for c in self.conditions]
        return "\n".join(lines)


def record(verdict: Verdict, directory: str | Path = ".") -> Path:
    """Write ``<notebook>.verdict.json`` (machine-readable) into ``directory``."""
    path = Path(directory) / f"{verdict.notebook}.verdict.json"
    path.write_text(json.dumps(verdict.to_dict(), indent=2, default=float))
    return path


def glue_verdict(verdict: Verdict, prefix: str) -> None:
    """Glue ``<prefix>_verdict`` ("holds" / "does not hold") and the rule for the prose."""
    from myst_nb import glue

    glue(f"{prefix}_verdict", "holds" if verdict.holds else "does not hold", display=False)
    glue(f"{prefix}_rule", verdict.rule, display=False)


def seed_means(df: pd.DataFrame, by: str, metric: str) -> pd.DataFrame:
    """Mean over seeds of ``metric``: one row per value of ``by``, one column per regime."""
    return df.pivot_table(index=by, columns="regime", values=metric, aggfunc="mean")


C1_CLAIM = (
    "K-means on an untrained encoder's outputs puts the tokens in a small region, so most of them "
    "die during training; pretraining the autoencoder first prevents it, and the gap grows with K."
)

C1_RULE = (
    "At the largest K, in every seed: baseline has lower perplexity, lower usage and a smaller "
    "codebook spread than pretrain, and pretrain has the lower MSE. And the pretrain/baseline "
    "ratio of seed-mean perplexities grows with K: it is higher at the largest K than at the "
    "smallest, and its rank correlation with K is positive."
)


def check_tokens_collapse(df: pd.DataFrame, profile: str = "", notebook: str = "tokens_collapse") -> Verdict:
    """C1 on a table with columns regime, seed, codebook_size, perplexity, usage,
    codebook_spread, mse (one row per run)."""
    k_max, k_min = df.codebook_size.max(), df.codebook_size.min()
    at_max = df[df.codebook_size == k_max].pivot_table(index="seed", columns="regime",
                                                       values=["perplexity", "usage", "codebook_spread", "mse"])
    seeds = sorted(at_max.index.tolist())

    def per_seed(metric, lower):
        b, p = at_max[(metric, "baseline")], at_max[(metric, "pretrain")]
        ok = (b < p) if lower == "baseline" else (p < b)
        detail = "; ".join(f"seed {s}: baseline {b[s]:.4g} vs pretrain {p[s]:.4g}" for s in seeds)
        return Condition(f"K={k_max}: {lower} has the lower {metric} in every seed", bool(ok.all()), detail)

    conditions = [per_seed("perplexity", "baseline"), per_seed("usage", "baseline"),
                  per_seed("codebook_spread", "baseline"), per_seed("mse", "pretrain")]
    ppl = seed_means(df, "codebook_size", "perplexity")
    ratio = ppl["pretrain"] / ppl["baseline"]
    rho = float(pd.Series(ratio.index, index=ratio.index).corr(ratio, method="spearman")) if len(ratio) > 1 else 0.0
    conditions.append(Condition(
        "the pretrain/baseline perplexity ratio grows with K",
        bool(ratio[k_max] > ratio[k_min] and rho > 0),
        f"ratio {ratio[k_min]:.3g} at K={k_min}, {ratio[k_max]:.3g} at K={k_max}; Spearman rho={rho:.2f}; "
        + ", ".join(f"K={k}: {v:.3g}" for k, v in ratio.items())))
    means = at_max.mean()
    numbers = {
        "k_max": int(k_max),
        **{f"{m}_{r}": float(means[(m, r)]) for m in ("perplexity", "usage", "codebook_spread", "mse")
           for r in ("baseline", "pretrain")},
        "ratio_at_kmin": float(ratio[k_min]), "ratio_at_kmax": float(ratio[k_max]), "ratio_spearman": rho,
    }
    return Verdict("C1", "Tokens collapse (synthetic data)", C1_RULE, conditions, numbers,
                   profile=profile, seeds=seeds, notebook=notebook, statement=C1_CLAIM)


C2_CLAIM = (
    "An encoder with too few hidden units maps different classes to overlapping regions of latent "
    "space; a wider encoder keeps them apart and reconstructs better."
)

C2_RULE = (
    "In the pretrain regime, in every seed: from the smallest to the largest encoder width, the "
    "held-out linear-probe accuracy and the Fisher ratio of the embeddings rise and the MSE falls; "
    "and at the smallest width the classes merge: the linear probe misclassifies at least 10% of "
    "held-out embeddings (accuracy below 0.9)."
)


def check_embeddings_collapse(df: pd.DataFrame, profile: str = "", notebook: str = "embeddings_collapse") -> Verdict:
    """C2 on a table with columns regime, seed, hidden (encoder width), probe_accuracy,
    fisher_ratio, mse (one row per run); judged on the pretrain regime."""
    pre = df[df.regime == "pretrain"]
    w_min, w_max = pre.hidden.min(), pre.hidden.max()
    seeds = sorted(pre.seed.unique().tolist())
    by = pre.pivot_table(index="seed", columns="hidden", values=["probe_accuracy", "fisher_ratio", "mse"])

    def change(metric, direction):
        a, b = by[(metric, w_min)], by[(metric, w_max)]
        ok = (b > a) if direction == "rises" else (b < a)
        detail = "; ".join(f"seed {s}: {a[s]:.4g} -> {b[s]:.4g}" for s in seeds)
        return Condition(f"{metric} {direction} from width {w_min} to {w_max} in every seed", bool(ok.all()), detail)

    small = by[("probe_accuracy", w_min)]
    conditions = [change("probe_accuracy", "rises"), change("fisher_ratio", "rises"), change("mse", "falls"),
                  Condition(f"classes merge at width {w_min}: probe accuracy < 0.9 in every seed",
                            bool((small < 0.9).all()), "; ".join(f"seed {s}: {small[s]:.3f}" for s in seeds))]
    means = by.mean()
    numbers = {"w_min": int(w_min), "w_max": int(w_max),
               **{f"{m}_{tag}": float(means[(m, w)]) for m in ("probe_accuracy", "fisher_ratio", "mse")
                  for tag, w in (("wmin", w_min), ("wmax", w_max))}}
    return Verdict("C2", "Embeddings collapse from too little encoder capacity (synthetic data)", C2_RULE,
                   conditions, numbers, profile=profile, seeds=seeds, notebook=notebook, statement=C2_CLAIM)


C3_CLAIM = (
    "With a codebook initialised from an untrained encoder a bigger codebook buys little (most new "
    "tokens are dead); with pretraining, perplexity and reconstruction keep improving as K grows."
)

C3_RULE = (
    "At every K >= 512, in every seed: pretrain's perplexity and usage exceed baseline's and its "
    "test MSE is lower. And over K >= 512, pretrain's seed-mean MSE falls from each K to the next, "
    "while baseline's stops improving: its seed-mean MSE at the largest K is less than 2% below "
    "its MSE at K = 512."
)


def check_cifar10_scaling(df: pd.DataFrame, profile: str = "", notebook: str = "cifar10_scaling") -> Verdict:
    """C3 on a table with columns regime, seed, codebook_size, perplexity, usage, mse."""
    large = df[df.codebook_size >= 512]
    seeds = sorted(df.seed.unique().tolist())
    if large.empty:
        ks = sorted(df.codebook_size.unique().tolist())
        return Verdict("C3", "Codebook-size scaling on CIFAR-10", C3_RULE,
                       [Condition("the sweep reaches K >= 512", False, f"codebook sizes run: {ks}")], {},
                       profile=profile, seeds=seeds, notebook=notebook, statement=C3_CLAIM)
    wide = large.pivot_table(index=["codebook_size", "seed"], columns="regime", values=["perplexity", "usage", "mse"])

    def every(metric, better):
        b, p = wide[(metric, "baseline")], wide[(metric, "pretrain")]
        ok = (p > b) if better == "higher" else (p < b)
        detail = "; ".join(f"K={k} seed {s}: baseline {b[(k, s)]:.4g} vs pretrain {p[(k, s)]:.4g}" for k, s in b.index)
        return Condition(f"pretrain's {metric} is {better} at every K >= 512 in every seed", bool(ok.all()), detail)

    mse = seed_means(large, "codebook_size", "mse")
    ks = mse.index.tolist()
    pre_steps = mse["pretrain"].diff().dropna()
    base_gain = float(1 - mse["baseline"].iloc[-1] / mse["baseline"].iloc[0])
    conditions = [
        every("perplexity", "higher"), every("usage", "higher"), every("mse", "lower"),
        Condition("pretrain's MSE falls from each K >= 512 to the next", bool(len(ks) > 1 and (pre_steps < 0).all()),
                  ", ".join(f"K={k}: {v:.4g}" for k, v in mse["pretrain"].items())),
        Condition(f"baseline's MSE stops improving: less than 2% lower at K={ks[-1]} than at K={ks[0]}",
                  bool(len(ks) > 1 and base_gain < 0.02),
                  f"{base_gain:.1%} lower; " + ", ".join(f"K={k}: {v:.4g}" for k, v in mse["baseline"].items())),
    ]
    k_max = ks[-1]
    at_max = df[df.codebook_size == k_max].groupby("regime")[["perplexity", "usage", "mse", "dead_tokens"]].mean()
    numbers = {"k_max": int(k_max), "baseline_mse_gain": base_gain,
               "pretrain_mse_gain": float(1 - mse["pretrain"].iloc[-1] / mse["pretrain"].iloc[0]),
               **{f"{m}_{r}": float(at_max.loc[r, m]) for m in at_max.columns for r in at_max.index}}
    return Verdict("C3", "Codebook-size scaling on CIFAR-10", C3_RULE, conditions, numbers,
                   profile=profile, seeds=seeds, notebook=notebook, statement=C3_CLAIM)
