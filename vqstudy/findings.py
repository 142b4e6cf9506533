"""The findings of the "Beyond the paper" and "Practitioners' questions" chapters, in
the one form of a condition (:mod:`vqstudy.rules`): each chapter's thresholds, its
question or statement and its rule as text (shown in the chapter before the numbers), and
a check that returns its verdict
(:class:`vqstudy.claims.Verdict`, ``role="finding"``). Every condition is a statistic of
the runs compared with a threshold (:func:`vqstudy.rules.condition`), with its margin,
seed spread and fragility; where a chapter names a best setting, the settings tied with it
are reported (:func:`tied_lowest`).

One section per chapter, in the order of the book:

- ``notebooks/codebook_init.ipynb``: Init1 (:func:`check_avoids`), Init2 (:func:`check_property`);
- ``notebooks/quantization_start.ipynb``: Start1 (:func:`check_shrinks`), Start2 (:func:`check_optimum`);
- ``notebooks/cifar10_capacity.ipynb``: CAP (:func:`check_capacity`);
- ``notebooks/token_probe.ipynb``: TOK1 (:func:`check_tokens_keep_the_class`), TOK2
  (:func:`check_collapse_costs_the_class`);
- ``notebooks/vq_fixes.ipynb``: Fixes (:func:`check_fixes`) and its ranking (:func:`ranking`);
- ``notebooks/measuring_collapse.ipynb`` (Practitioners' questions): PQ1
  (:func:`check_batch_understates`);
- ``notebooks/usage_growth.ipynb`` (Practitioners' questions): GROW1 (:func:`check_usage_growth`).
- ``notebooks/dead_code_reset.ipynb`` (Practitioners' questions): RESET1
  (:func:`check_reset_substitutes`).
- ``notebooks/knobs.ipynb`` (Practitioners' questions): KNOB1 (:func:`check_knobs`).

(R3, the finding of ``cifar10_robustness``, is judged by C3's own checks and lives beside
them in :mod:`vqstudy.claims`.)

Each check takes the chapter's run table (one row per run, a ``seed`` column; the
columns it needs are in its docstring). Where a rule reads a column derived from others,
the helper that derives it is here too, next to its check.

Pure functions of data: this module imports only pandas, numpy, :mod:`vqstudy.rules` and
:mod:`vqstudy.claims`.
"""

import math

import numpy as np
import pandas as pd

from vqstudy import claims, rules
from vqstudy.claims import Verdict, pct, sig, spearman
from vqstudy.rules import Condition


def key(name: str) -> str:
    """A method's name as part of a glue key (``kmeans++`` -> ``kmeanspp``,
    ``pretrain+kmeans`` -> ``pretrain_kmeans``)."""
    return name.replace("++", "pp").replace("+", "_")


def _seeds(df: pd.DataFrame) -> list:
    return sorted(df.seed.unique().tolist())


def tied_lowest(table: pd.DataFrame, by: str, metric: str, first=None) -> list:
    """The values of ``by`` whose seed-mean ``metric`` is within noise of the lowest
    (:func:`vqstudy.rules.tied_with_best`), and any whose seed mean equals the lowest
    exactly (with one seed and no floating-point spread there is no noise to be within, and
    a value is not tied with itself otherwise). ``first`` (one of the lowest) leads the
    list, the others follow by seed mean."""
    ties = rules.tied_with_best(table, by, metric, lower=True)
    means = ties["means"]
    low = means[ties["best"]]
    found = [v for v in means if v in ties["tied"] or means[v] == low]
    first = ties["best"] if first is None or first not in found else first
    return sorted(found, key=lambda v: (v != first, means[v]))


def _not_judged(name: str, detail: str) -> Condition:
    """A condition with no runs to compute its statistic on: it does not hold."""
    return Condition(name, False, detail)


# === codebook_init: how should the codebook start? ==========================================

INIT_REFERENCE = "pretrain+kmeans"   # the paper's fix: autoencoder first, then K-means
INIT_USAGE_MIN, INIT_PERPLEXITY_SHARE, INIT_RHO_MAX = 0.5, 0.5, -0.8

INIT_QUESTION = ("Does any way of starting the codebook avoid tokens collapse without pretraining, and what "
                 "property of the initial codebook decides it?")

INIT1_RULE = (
    f"An initialisation *avoids collapse* if, at the largest K and in every seed, it ends training with at "
    f"least {INIT_USAGE_MIN:.0%} of its tokens in use and a perplexity of at least {INIT_PERPLEXITY_SHARE:.0%} of "
    f"that of {INIT_REFERENCE} in the same seed. The finding holds if at least one initialisation without pretraining "
    "avoids collapse.")

INIT2_RULE = (
    "The candidate property is the initial codebook's *scale mismatch*, |log10(tr Cov(initial tokens) / "
    "tr Cov(embeddings at the end of the same run))|: 0 when the tokens start exactly as spread out as the "
    "embeddings end up, 1 when they are ten times more (or less) spread. The finding holds if, in every seed, "
    "across the initialisations without pretraining at the largest K, the rank correlation (Spearman) "
    f"between the scale mismatch and the final usage is at most {INIT_RHO_MAX}: the smaller the mismatch, the "
    "more tokens stay in use.")


def perplexity_share(df: pd.DataFrame, reference: str = INIT_REFERENCE) -> pd.Series:
    """Each run's perplexity as a share of the reference's (``initialisation ==
    reference``) at the same K and seed: Init1's second measure."""
    ref = df[df.initialisation == reference].set_index(["codebook_size", "seed"])["perplexity"]
    return pd.Series([p / ref[(k, s)] for p, k, s in zip(df.perplexity, df.codebook_size, df.seed)],
                     index=df.index, dtype=float)


def avoidance(t: pd.DataFrame) -> pd.Series:
    """Per initialisation (in order of appearance), its worst run of min(usage /
    INIT_USAGE_MIN, perplexity share / INIT_PERPLEXITY_SHARE): at least 1 exactly when
    every one of its runs keeps at least INIT_USAGE_MIN of its tokens in use and at
    least INIT_PERPLEXITY_SHARE of the reference's perplexity (a missing value counts as
    failing)."""
    score = np.minimum(t.usage / INIT_USAGE_MIN, t.perplexity_share / INIT_PERPLEXITY_SHARE).fillna(-math.inf)
    methods = list(dict.fromkeys(t.initialisation))
    return pd.Series({m: float(score[(t.initialisation == m).to_numpy()].min()) for m in methods}, dtype=float)


def best_avoidance(t: pd.DataFrame) -> float:
    """Init1's statistic: the best initialisation's :func:`avoidance` (-inf with none)."""
    scores = avoidance(t)
    return float(scores.max()) if len(scores) else -math.inf


def check_avoids(df: pd.DataFrame) -> Verdict:
    """Init1 at the largest K, on a table with columns initialisation, seed,
    codebook_size, usage, perplexity and perplexity_share (:func:`perplexity_share`);
    one row per run, the reference (INIT_REFERENCE) among them."""
    k_max = df.codebook_size.max()
    at_max = df[df.codebook_size == k_max]
    seeds = _seeds(at_max)
    runs_only = at_max[at_max.initialisation != INIT_REFERENCE]
    methods = list(dict.fromkeys(runs_only.initialisation))
    scores = avoidance(runs_only)
    passing = [m for m in methods if scores[m] >= 1]
    details, numbers = [], {"k_max": int(k_max)}
    for m in methods:
        rows = runs_only[runs_only.initialisation == m].set_index("seed")
        details.append(f"{m} {'avoids' if m in passing else 'collapses'} (usage "
                       + ", ".join(f"{rows.usage[s]:.0%}" for s in rows.index)
                       + "; perplexity share " + ", ".join(f"{rows.perplexity_share[s]:.2f}" for s in rows.index) + ")")
        numbers[f"usage_{key(m)}"] = float(rows.usage.mean())
        numbers[f"share_{key(m)}"] = float(rows.perplexity_share.mean())
    ref = at_max[at_max.initialisation == INIT_REFERENCE]
    numbers[f"usage_{key(INIT_REFERENCE)}"] = float(ref.usage.mean())
    numbers[f"perplexity_{key(INIT_REFERENCE)}"] = float(ref.perplexity.mean())
    numbers["n_avoid"] = len(passing)
    best = max(methods, key=lambda m: numbers[f"usage_{key(m)}"])
    numbers.update({"best": best, "passing": ", ".join(passing) or "none",
                    "best_usage": numbers[f"usage_{key(best)}"], "best_share": numbers[f"share_{key(best)}"]})
    conditions = [rules.condition(
        f"K={k_max}: at least one initialisation without pretraining avoids collapse in every seed", runs_only,
        best_avoidance, ">=", 1, scope="all seeds",
        what=f"the best initialisation's worst run of min(usage / {INIT_USAGE_MIN:g}, "
             f"perplexity share / {INIT_PERPLEXITY_SHARE:g})",
        detail="; ".join(details))]
    headline = (f"At K = {k_max}, {len(passing)} of {len(methods)} initialisations without pretraining avoid collapse; "
                f"the best, {best}, keeps {numbers['best_usage']:.0%} of its tokens in use, against "
                f"{numbers[f'usage_{key(INIT_REFERENCE)}']:.0%} for {INIT_REFERENCE}.")
    return Verdict("Init1", "An initialisation avoids collapse without pretraining", INIT1_RULE, conditions,
                   numbers, statement=INIT_QUESTION, headline=headline, seeds=seeds, role="finding")


def rho_with_usage(column: str):
    """The statistic "Spearman ρ between ``column`` and the final usage" (runs of one seed)."""
    return lambda t: spearman(t[column], t.usage)


def check_property(df: pd.DataFrame) -> Verdict:
    """Init2 at the largest K: per seed, across the initialisations without pretraining,
    Spearman of the scale mismatch with the final usage (judged), and of the initial usage
    and the initial codebook spread (reported). Columns initialisation, seed,
    codebook_size, usage, scale_mismatch, initial_usage, initial_spread."""
    k_max = df.codebook_size.max()
    runs_only = df[(df.codebook_size == k_max) & (df.initialisation != INIT_REFERENCE)]
    seeds = _seeds(runs_only)
    rho = {name: {s: rho_with_usage(name)(runs_only[runs_only.seed == s]) for s in seeds}
           for name in ("scale_mismatch", "initial_usage", "initial_spread")}
    condition = rules.condition(
        f"K={k_max}: Spearman(scale mismatch, usage) ≤ {INIT_RHO_MAX} in every seed", runs_only,
        rho_with_usage("scale_mismatch"), "<=", INIT_RHO_MAX, what="Spearman ρ(scale mismatch, usage)",
        detail="reported, not judged: ρ of the initial usage " + ", ".join(f"{v:.2f}" for v in rho["initial_usage"].values())
        + "; of the initial codebook spread " + ", ".join(f"{v:.2f}" for v in rho["initial_spread"].values()))
    worst = condition.deciding

    def mean(d):
        return float(np.mean(list(d.values())))

    numbers = {"k_max": int(k_max), "rho_mismatch_worst": float(worst), "rho_mismatch": mean(rho["scale_mismatch"]),
               "rho_initial_usage": mean(rho["initial_usage"]), "rho_initial_spread": mean(rho["initial_spread"])}
    headline = (f"At K = {k_max}, the rank correlation of the initial codebook's scale mismatch with the final usage "
                f"is {worst:.2f} in the seed where it is weakest (rule: ≤ {INIT_RHO_MAX}).")
    return Verdict("Init2", "The initial codebook's scale decides collapse", INIT2_RULE, [condition],
                   numbers, statement=INIT_QUESTION, headline=headline, seeds=seeds, role="finding")


# === quantization_start: when should quantization start? ====================================

START_DATASETS = {"gaussian_mixture": "C1 mixture", "cifar10": "CIFAR-10"}   # a data set's name in the chapter
START_RHO_MIN = 0.7

START_QUESTION = ("With a fixed number of training steps, when should quantization be switched on? Where is the "
                  "best switch for the final reconstruction, and does quantizing early shrink the codebook, as the "
                  "authors' follow-up argues?")


def start1_rule(n_switches: int) -> str:
    """Start1's rule for a sweep of ``n_switches`` switches."""
    return ("Quantizing early shrinks the codebook if, in every seed of both settings, the share of tokens in use at "
            "the end of training rises with the switch: the rank correlation (Spearman) between the switch share and "
            f"the final usage, over the {n_switches} switches, is at least {START_RHO_MIN}.")


def start2_rule(latest: str) -> str:
    """Start2's rule, ``latest`` the name of the latest switch (``90%``)."""
    return ("The best switch is neither immediate nor last-minute if, in every seed of both settings, the switch with "
            f"the lowest final evaluation MSE lies strictly between 0% and the latest switch ({latest}).")


def start_key(dataset: str) -> str:
    """A data set's name in Start1's and Start2's numbers: ``synthetic`` or ``cifar10``."""
    return "synthetic" if dataset == START_DATASETS["gaussian_mixture"] else "cifar10"


def check_shrinks(df: pd.DataFrame, rule: str = "") -> Verdict:
    """Start1 on a table with columns dataset, seed, switch, switch_percent, usage (one
    row per run): per data set, in every seed, Spearman of the switch share with the final
    usage. ``rule``: :func:`start1_rule` of the sweep (default: from the table)."""
    conditions, numbers = [], {}
    for dataset, d in df.groupby("dataset", sort=False):
        c = rules.condition(f"{dataset}: Spearman(switch, usage) ≥ {START_RHO_MIN} in every seed", d,
                            lambda t: spearman(t.switch_percent, t.usage), ">=", START_RHO_MIN,
                            what="Spearman ρ(switch share, final usage)")
        conditions.append(c)
        means = d.groupby("switch_percent").usage.mean()
        k = start_key(dataset)
        numbers.update({f"rho_{k}": float(np.mean(list(c.values.values()))), f"rho_{k}_worst": float(c.deciding),
                        f"usage_first_{k}": float(means.iloc[0]), f"usage_last_{k}": float(means.iloc[-1])})
    worst = min(numbers[f"rho_{k}_worst"] for k in ("synthetic", "cifar10") if f"rho_{k}_worst" in numbers)
    headline = "Final usage from quantizing at once to the latest switch: " + ", ".join(
        f"{numbers[f'usage_first_{k}']:.0%} → {numbers[f'usage_last_{k}']:.0%} on {name}"
        for k, name in (("synthetic", "the C1 mixture"), ("cifar10", "CIFAR-10")) if f"rho_{k}" in numbers) + \
        f" (worst ρ {worst:.2f})."
    return Verdict("Start1", "Quantizing early shrinks the codebook",
                   rule or start1_rule(df.switch_percent.nunique()), conditions, numbers,
                   statement=START_QUESTION, headline=headline, seeds=_seeds(df), role="finding")


def interior_lead(latest: float):
    """Start2's statistic for one seed's runs: how much lower the lowest final MSE among
    the switches strictly inside (0%, ``latest``) is than the lowest of the others (0% and
    the latest), relative to the latter: (edge − inside) / edge. Above 0 exactly when the
    lowest MSE is at an interior switch; 0 on a tie; NaN without an interior run, +inf
    without an edge run (then an interior switch is the best)."""
    def statistic(t: pd.DataFrame) -> float:
        inside = ((t.switch_percent > 0) & (t.switch_percent < latest)).to_numpy()
        best_inside, best_edge = t.mse[inside].min(), t.mse[~inside].min()   # NaN MSEs left out
        if not np.isfinite(best_inside):
            return math.nan
        if not np.isfinite(best_edge):
            return math.inf
        diff = float(best_edge - best_inside)
        return diff / float(best_edge) if best_edge > 0 else diff
    return statistic


def _percent(p: float) -> str:
    return f"{p:g}%"


def check_optimum(df: pd.DataFrame, rule: str = "") -> Verdict:
    """Start2 on a table with columns dataset, seed, switch_percent, mse, usage,
    autoencoder_mse and gap (one row per run): per data set, in every seed, the lowest
    final MSE is at a switch strictly between 0% and the latest (:func:`interior_lead`).
    Reported beside it: the switches whose seed-mean MSE is tied with the lowest
    (:func:`vqstudy.rules.tied_with_best`). ``rule``: :func:`start2_rule` of the sweep."""
    conditions, numbers = [], {}
    latest = float(df.switch_percent.max())
    for dataset, d in df.groupby("dataset", sort=False):
        means = d.groupby("switch_percent").mean(numeric_only=True)
        optimum = float(means.mse.idxmin())
        ties = tied_lowest(d, "switch_percent", "mse", first=optimum)
        tied = ", ".join(_percent(p) for p in ties)
        per_seed = []
        for s in _seeds(d):
            g = d[d.seed == s].dropna(subset=["mse"])
            inside = (g.switch_percent > 0) & (g.switch_percent < latest)
            parts = []
            for where, rows in (("inside", g[inside]), (f"at 0% or {latest:.0f}%", g[~inside])):
                if len(rows):
                    lowest = rows.loc[rows.mse.idxmin()]
                    parts.append(f"lowest {where} {sig(lowest.mse, 4)} (at {_percent(lowest.switch_percent)})")
            per_seed.append(f"seed {s}: " + ", ".join(parts))
        conditions.append(rules.condition(
            f"{dataset}: the lowest final MSE is at a switch strictly between 0% and {latest:.0f}% in every seed", d,
            interior_lead(latest), ">", 0,
            what=f"(lowest MSE of 0% and {latest:.0f}% − lowest MSE inside) / the former",
            detail="; ".join(per_seed) + f"; tied with the lowest seed-mean MSE (reported, not judged): {tied}"))
        k = start_key(dataset)
        numbers.update({f"best_{k}": optimum, f"tied_{k}": tied, f"n_tied_{k}": len(ties),
                        f"mse_best_{k}": float(means.mse[optimum]),
                        f"mse_zero_{k}": float(means.mse[0.0]), f"mse_latest_{k}": float(means.mse[latest]),
                        f"usage_best_{k}": float(means.usage[optimum]), f"usage_zero_{k}": float(means.usage[0.0]),
                        f"ae_mse_best_{k}": float(means.autoencoder_mse[optimum]),
                        f"gap_best_{k}": float(means.gap[optimum]), f"gap_latest_{k}": float(means.gap[latest])})
    headline = "Lowest final MSE (seed mean) when quantization starts after " + " and ".join(
        f"{numbers[f'best_{k}']:.0f}% of the steps on {name} (tied: {numbers[f'tied_{k}']})"
        for k, name in (("synthetic", "the C1 mixture"), ("cifar10", "CIFAR-10")) if f"best_{k}" in numbers) + "."
    return Verdict("Start2", "The best switch is neither immediate nor last-minute",
                   rule or start2_rule(_percent(latest)), conditions, numbers, statement=START_QUESTION,
                   headline=headline, seeds=_seeds(df), role="finding")


# === cifar10_capacity: does embeddings collapse show on real data? ==========================

CAP_CHANCE = 0.1  # ten balanced classes
CAP_GAP = 0.05    # the loss of probe accuracy, widest to narrowest encoder, that counts as a merge
CAP_ACC, CAP_FISHER, CAP_RANK = "pooled_probe_accuracy", "pooled_fisher_ratio", "pooled_effective_rank"

CAP_STATEMENT = ("Too little encoder capacity makes CIFAR-10's classes merge: as the convolutional encoder "
                 "narrows, the classes of the test images become harder to tell apart from their pooled "
                 "embeddings, and reconstruction gets worse.")

CAP_RULE = (f"In the pretrain regime, in every seed, across every width: the Spearman rank correlation between the "
            f"width and the held-out linear-probe accuracy on the per-image pooled embeddings is at least "
            f"{claims.TREND_RHO:g}, between the width and their Fisher ratio at least {claims.TREND_RHO:g}, and "
            f"between the width and the test MSE at most −{claims.TREND_RHO:g}; and the probe accuracy of the "
            f"narrowest model is at least {CAP_GAP * 100:.0f} points below that of the widest.")


def accuracy_lost(w_min, w_max):
    """CAP's last statistic: pretrain's probe accuracy at width ``w_max`` minus at ``w_min``."""
    return lambda t: claims.at_width(CAP_ACC, w_max)(t) - claims.at_width(CAP_ACC, w_min)(t)


def check_capacity(df: pd.DataFrame) -> Verdict:
    """CAP on one row per run (columns regime, seed, hidden and the pooled metrics, mse):
    C2's width trends on the pooled embeddings, and the accuracy lost from the widest
    to the narrowest model."""
    widths = sorted(df.hidden.unique().tolist())
    w_min, w_max = widths[0], widths[-1]
    pre = df[df.regime == "pretrain"]
    seeds = _seeds(pre)
    by = pre.pivot_table(index="seed", columns="hidden", values=[CAP_ACC, CAP_FISHER, "mse"])
    conditions, rhos = [], {}
    for metric, sign, name in ((CAP_ACC, 1, "probe accuracy"), (CAP_FISHER, 1, "Fisher ratio"), ("mse", -1, "test MSE")):
        c = rules.condition(
            f"{name} {'rises' if sign > 0 else 'falls'} with width: Spearman ρ {'≥' if sign > 0 else '≤'} "
            f"{sign * claims.TREND_RHO:g} in every seed", pre, claims.width_trend(metric),
            ">=" if sign > 0 else "<=", sign * claims.TREND_RHO, what=f"Spearman ρ(width, {name})",
            detail=f"widths {widths}: " + "; ".join(f"seed {s}: " + ", ".join(sig(by[(metric, w)][s]) for w in widths)
                                                    for s in seeds))
        conditions.append(c)
        rhos[metric] = c.values
    gap = by[(CAP_ACC, w_max)] - by[(CAP_ACC, w_min)]
    conditions.append(rules.condition(
        f"width {w_min} is at least {CAP_GAP * 100:.0f} points below width {w_max} in probe accuracy, in every seed",
        pre, accuracy_lost(w_min, w_max), ">=", CAP_GAP,
        what=f"probe accuracy at width {w_max} − at width {w_min}",
        detail="; ".join(f"seed {s}: {100 * gap[s]:.1f} points" for s in seeds)))
    numbers = {"w_min": int(w_min), "w_max": int(w_max), "gap_mean": float(gap.mean()), "gap_min": float(gap.min()),
               **{f"rho_{m}": float(min(r.values(), key=abs)) for m, r in rhos.items()}}
    for regime, rows in df.groupby("regime"):
        for metric, short in ((CAP_ACC, "acc"), (CAP_FISHER, "fisher"), (CAP_RANK, "rank"), ("mse", "mse")):
            stats = rows.groupby("hidden")[metric].agg(["mean", "std"])
            for tag, w in (("wmin", w_min), ("wmax", w_max)):
                numbers[f"{short}_{regime}_{tag}"] = float(stats.loc[w, "mean"])
                numbers[f"{short}_{regime}_{tag}_sd"] = float(stats.loc[w, "std"]) if len(seeds) > 1 else 0.0
    def mse_at(w) -> str:  # the seeds' test MSE in words: their mean where they agree, else median and each seed's
        values = by[("mse", w)].tolist()
        if len(values) > 1 and (min(values) <= 0 or max(values) / min(values) >= 1.5):
            return f"median {sig(float(np.median(values)))} (seeds: {', '.join(sig(v) for v in values)})"
        return sig(float(np.mean(values)))

    headline = (f"Pretrain, {len(seeds)} seeds: the per-image probe's accuracy is "
                f"{pct(numbers['acc_pretrain_wmin'])} at width {w_min} and "
                f"{pct(numbers['acc_pretrain_wmax'])} at width {w_max}; test MSE "
                f"{mse_at(w_min)} and {mse_at(w_max)}.")
    return Verdict("CAP", "Embeddings collapse on CIFAR-10 (encoder width)", CAP_RULE, conditions, numbers,
                   statement=CAP_STATEMENT, headline=headline, seeds=seeds, role="finding")


# === token_probe: do the tokens carry the classes? ==========================================

TOK_CHANCE = 0.1  # ten balanced classes on both data sets
TOK_LOSS = 0.05   # the most probe accuracy the tokens may lose against the embeddings, TOK1
TOKEN, QUANTIZED, EMBEDDING = "probe_token_accuracy", "probe_quantized_accuracy", "probe_embedding_accuracy"
TOK_REPRESENTATIONS = [TOKEN, QUANTIZED, EMBEDDING]
TOK_DATASETS = {"mixture": "the mixture", "cifar10": "CIFAR-10"}

TOK1_STATEMENT = ("The tokens carry the class as well as the embeddings they replace: quantizing a pretrained "
                  "encoder's embeddings loses little of what a linear probe reads from them.")
TOK2_STATEMENT = ("Tokens collapse costs class information: at a large codebook, the tokens of a pretrained "
                  "encoder carry more of the class than those of a codebook initialised from the untrained one.")
TOK1_RULE = (f"In the pretrain regime, on both data sets, at every K, in every seed: the probe on the tokens "
             f"(the one-hot token id on the mixture, the bag of tokens on CIFAR-10) is at most "
             f"{TOK_LOSS * 100:.0f} accuracy points below the probe on the continuous embeddings.")
TOK2_RULE = ("On both data sets, at the largest K, in every seed: the probe on the tokens is more accurate in the "
             "pretrain regime than in the baseline regime.")


def tok_stats(df: pd.DataFrame) -> dict:
    """Mean and standard deviation over seeds of each probe, per data set, K and regime, as
    numbers named <dataset>_<kmin|kmax>_<regime>_<token|quantized|embedding>[_sd]."""
    k_min, k_max = df.codebook_size.min(), df.codebook_size.max()
    g = df.groupby(["dataset", "codebook_size", "regime"])[TOK_REPRESENTATIONS].agg(["mean", "std"])
    numbers = {"k_min": int(k_min), "k_max": int(k_max)}
    for (dataset, k, regime), row in g.iterrows():
        if k not in (k_min, k_max):
            continue
        tag = "kmax" if k == k_max else "kmin"
        for column, short in zip(TOK_REPRESENTATIONS, ("token", "quantized", "embedding")):
            numbers[f"{dataset}_{tag}_{regime}_{short}"] = float(row[(column, "mean")])
            sd = row[(column, "std")]
            numbers[f"{dataset}_{tag}_{regime}_{short}_sd"] = 0.0 if pd.isna(sd) else float(sd)
    return numbers


def largest_loss(t: pd.DataFrame) -> float:
    """TOK1's statistic: the largest loss of the tokens' probe against the embeddings' over
    the runs given (embeddings − tokens; a missing value makes it NaN, which fails)."""
    return float((t[EMBEDDING] - t[TOKEN]).max(skipna=False))


def token_lead(t: pd.DataFrame) -> float:
    """TOK2's statistic for one seed's runs at one K: the tokens' probe accuracy with
    pretrain minus with baseline (NaN where a regime is missing)."""
    m = t.groupby("regime")[TOKEN].mean()
    return float(m.get("pretrain", math.nan) - m.get("baseline", math.nan))


def check_tokens_keep_the_class(df: pd.DataFrame) -> Verdict:
    """TOK1 on one row per run (columns dataset, codebook_size, regime, seed and the probes)."""
    pre = df[df.regime == "pretrain"]
    conditions, numbers = [], tok_stats(df)
    for dataset in TOK_DATASETS:
        rows = pre[pre.dataset == dataset].sort_values(["codebook_size", "seed"])
        conditions.append(rules.condition(
            f"{TOK_DATASETS[dataset]}: the tokens' probe is at most {TOK_LOSS * 100:.0f} points below the embeddings' "
            "at every K, in every seed", rows, largest_loss, "<=", TOK_LOSS,
            what="largest loss over K, embeddings' probe accuracy − tokens'",
            detail="; ".join(f"K={k} seed {s}: tokens {t:.1%}, embeddings {e:.1%}"
                             for k, s, t, e in zip(rows.codebook_size, rows.seed, rows[TOKEN], rows[EMBEDDING])))
            if len(rows) else _not_judged(f"{TOK_DATASETS[dataset]}: the tokens' probe is at most "
                                          f"{TOK_LOSS * 100:.0f} points below the embeddings'", "no pretrain runs"))
        numbers[f"{dataset}_max_loss"] = float((rows[EMBEDDING] - rows[TOKEN]).max())
    k = numbers["k_max"]
    headline = (f"Pretrain, K = {k}: the probe on the tokens reads {pct(numbers['mixture_kmax_pretrain_token'])} "
                f"on the mixture (embeddings {pct(numbers['mixture_kmax_pretrain_embedding'])}) and "
                f"{pct(numbers['cifar10_kmax_pretrain_token'])} on CIFAR-10 "
                f"(embeddings {pct(numbers['cifar10_kmax_pretrain_embedding'])}).")
    return Verdict("TOK1", "Quantization keeps the class (pretrain)", TOK1_RULE, conditions, numbers,
                   statement=TOK1_STATEMENT, headline=headline, seeds=_seeds(df), role="finding")


def check_collapse_costs_the_class(df: pd.DataFrame) -> Verdict:
    """TOK2 on the same table as :func:`check_tokens_keep_the_class`."""
    conditions, numbers = [], tok_stats(df)
    k = numbers["k_max"]
    for dataset in TOK_DATASETS:
        rows = df[(df.dataset == dataset) & (df.codebook_size == k)]
        rows = rows[rows.groupby("seed")[TOKEN].transform(lambda x: x.notna().any())]  # a seed with no probe: left out
        at = rows.pivot_table(index="seed", columns="regime", values=TOKEN)
        name = (f"{TOK_DATASETS[dataset]}, K={k}: the tokens' probe is more accurate with pretrain than with "
                "baseline, in every seed")
        conditions.append(rules.condition(
            name, rows, token_lead, ">", 0, what="tokens' probe accuracy, pretrain − baseline",
            detail="; ".join(f"seed {s}: baseline {at.loc[s, 'baseline']:.1%}, pretrain {at.loc[s, 'pretrain']:.1%}"
                             for s in at.index)) if len(rows) else _not_judged(name, f"no token probe at K={k}"))
        lead = at["pretrain"] - at["baseline"]
        numbers[f"{dataset}_lead_mean"], numbers[f"{dataset}_lead_min"] = float(lead.mean()), float(lead.min())
    headline = (f"K = {k}, probe on the tokens: mixture {pct(numbers['mixture_kmax_pretrain_token'])} with "
                f"pretrain against {pct(numbers['mixture_kmax_baseline_token'])} with baseline; CIFAR-10 "
                f"{pct(numbers['cifar10_kmax_pretrain_token'])} against "
                f"{pct(numbers['cifar10_kmax_baseline_token'])}.")
    return Verdict("TOK2", "Tokens collapse costs class information", TOK2_RULE, conditions, numbers,
                   statement=TOK2_STATEMENT, headline=headline, seeds=_seeds(df), role="finding")


# === vq_fixes: the fixes people use =========================================================

FIXES_DATASETS = {"gaussian_mixture": "C1's data", "cifar10": "CIFAR-10"}
FIXES_KEYS = {"gaussian_mixture": "synthetic", "cifar10": "cifar10"}  # a data set's name in glue keys
BASELINE, PAPER_FIX, CHECK = "vq", "pretrain+vq", "lib_vq"             # method names (profiles.yml)
FIXES_USAGE_MIN, FIXES_MSE_MARGIN = 0.5, 0.05

FIXES_QUESTION = ("Which of the fixes people use against tokens collapse avoid it, at what cost in reconstruction "
                  "and time, and where does the paper's fix (pretrain, then K-means) stand among them?")

FIXES_RULE = (
    f"A method *avoids collapse* at a data set and K when it ends training with at least {FIXES_USAGE_MIN:.0%} of "
    "its tokens in use on the evaluation set, in every seed. The finding holds if, at each data set and K, "
    f"the paper's fix (`{PAPER_FIX}`) avoids collapse and its seed-mean MSE is at most {FIXES_MSE_MARGIN:.0%} above "
    "the lowest seed-mean MSE among the methods that avoid collapse. Reported beside it, not judged: which "
    f"methods avoid collapse, their MSE relative to the paper's fix, and their time per quantized step "
    f"relative to the study's baseline (`{BASELINE}`).")

FIXES_RANKING = ("Within a data set and K, the methods that avoid collapse come first, by seed-mean MSE (lowest "
                 "first), those whose seed-mean MSE is within noise of the lowest (tied with the best: closer to "
                 "it than two standard errors of the per-seed differences, or than the floating-point spread) "
                 "sharing rank 1=; then the others, by seed-mean tokens in use (most first).")


def with_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (columns data, K, seed, method, mse, step_ms) with each run's MSE relative to
    the paper's fix (``mse_vs_fix``) and its time per quantized step relative to the
    study's baseline (``time_vs_baseline``), both in the same data set, K and seed."""
    per_run = df.set_index(["data", "K", "seed", "method"])
    out = df.copy()
    out["mse_vs_fix"] = [m / per_run.loc[(d, k, s, PAPER_FIX), "mse"] for m, d, k, s in zip(df.mse, df.data, df.K, df.seed)]
    out["time_vs_baseline"] = [t / per_run.loc[(d, k, s, BASELINE), "step_ms"]
                               for t, d, k, s in zip(df.step_ms, df.data, df.K, df.seed)]
    return out


def fixes_groups(df: pd.DataFrame) -> list:
    """The (data set, K) pairs of the table, in the order of the sweep."""
    return list(dict.fromkeys(zip(df.data, df.K)))


def avoiding(part: pd.DataFrame) -> list:
    """The methods of one data set and K that keep at least FIXES_USAGE_MIN of their
    tokens in use in every seed (seeds without a usage left out), in order of appearance."""
    usage_min = part.groupby("method", sort=False).usage.min()
    return [m for m in usage_min.index if usage_min[m] >= FIXES_USAGE_MIN]


def lowest_avoiding(part: pd.DataFrame):
    """The method with the lowest seed-mean MSE among those that avoid collapse (None if none)."""
    mean = part.groupby("method", sort=False).mse.mean()
    found = avoiding(part)
    return min(found, key=lambda m: mean[m]) if found else None


def mse_above_best(part: pd.DataFrame) -> float:
    """Fixes' second statistic (runs of one data set and K): how far the paper's fix's
    seed-mean MSE is above the lowest among the methods that avoid collapse, relative:
    fix / lowest − 1; NaN when the fix does not avoid collapse (not judged, fails).

    Within a rounding error of FIXES_MSE_MARGIN, the side of the threshold is the one
    ``fix <= (1 + FIXES_MSE_MARGIN) * lowest`` gives (the rule as first written), so that
    the value is the margin itself, or the next float above it: with a lowest MSE of 1.0, a
    fix at 1.05 is at the threshold, where 1.05 / 1.0 − 1 alone would be 0.050000000000000044."""
    if PAPER_FIX not in avoiding(part):
        return math.nan
    mean = part.groupby("method", sort=False).mse.mean()
    fix, best = float(mean[PAPER_FIX]), float(mean[lowest_avoiding(part)])
    if math.isnan(fix) or math.isnan(best):
        return math.nan
    excess = fix / best - 1 if best > 0 else math.nan
    if fix <= (1 + FIXES_MSE_MARGIN) * best:
        return min(excess, FIXES_MSE_MARGIN) if not math.isnan(excess) else FIXES_MSE_MARGIN
    above = float(np.nextafter(FIXES_MSE_MARGIN, math.inf))
    return max(excess, above) if not math.isnan(excess) else math.inf


def tied(part: pd.DataFrame) -> list:
    """The methods that avoid collapse whose seed-mean MSE is within noise of the lowest
    (:func:`tied_lowest`), :func:`lowest_avoiding` first; [] when none avoids collapse."""
    found = avoiding(part)
    return tied_lowest(part[part.method.isin(found)], "method", "mse", first=lowest_avoiding(part)) if found else []


def ranking(part: pd.DataFrame) -> pd.DataFrame:
    """FIXES_RANKING on one data set and K: one row per method, in ranking order, with
    whether it avoids collapse, whether it is tied with the best, and its rank (``1=``
    shared by the tied ones, ``–`` for a method that does not avoid collapse)."""
    mean = part.groupby("method", sort=False).mean(numeric_only=True)
    found, best = avoiding(part), tied(part)
    rest = sorted((m for m in found if m not in best), key=lambda m: mean.mse[m])
    others = sorted((m for m in mean.index if m not in found), key=lambda m: -mean.usage[m])
    top = f"1{'=' if len(best) > 1 else ''}"
    rows = [{"method": m, "avoids": True, "tied": True, "rank": top} for m in best]
    rows += [{"method": m, "avoids": True, "tied": False, "rank": str(len(best) + i + 1)} for i, m in enumerate(rest)]
    rows += [{"method": m, "avoids": False, "tied": False, "rank": "–"} for m in others]
    return pd.DataFrame(rows, columns=["method", "avoids", "tied", "rank"])


def check_fixes(df: pd.DataFrame) -> Verdict:
    """Fixes on one row per run (columns data, key, K, seed, method, usage, mse,
    time_vs_baseline (:func:`with_ratios`)): one pair of conditions per data set and K
    (the paper's fix avoids collapse; its MSE is within the margin of the best among the
    methods that avoid collapse). The numbers the prose quotes are of each data set's
    largest K."""
    conditions, numbers, lines = [], {}, []
    groups = fixes_groups(df)
    for data, k in groups:
        part = df[(df.data == data) & (df.K == k)]
        mean = part.groupby("method", sort=False).mean(numeric_only=True)
        found, best, ties = avoiding(part), lowest_avoiding(part), tied(part)
        fix_avoids = PAPER_FIX in found
        fix_runs = part[part.method == PAPER_FIX].dropna(subset=["usage"])  # as "avoids" reads them: NaN left out
        name = f"{data}, K={k}: the paper's fix keeps at least {FIXES_USAGE_MIN:.0%} of its tokens in use in every seed"
        conditions.append(rules.condition(name, fix_runs, lambda t: float(t.usage.min()), ">=", FIXES_USAGE_MIN,
                                          what="the paper's fix's tokens in use") if len(fix_runs) else
                          _not_judged(name, "no run of the paper's fix with a usage"))
        conditions.append(rules.condition(
            f"{data}, K={k}: the paper's fix's seed-mean MSE is at most {FIXES_MSE_MARGIN:.0%} above the lowest among "
            "the methods that avoid collapse", part, mse_above_best, "<=", FIXES_MSE_MARGIN, scope="all seeds",
            what="fix's seed-mean MSE / lowest − 1, among the methods that avoid collapse",
            detail=(f"paper's fix {sig(mean.mse[PAPER_FIX], 4)}{'' if fix_avoids else ' (does not avoid collapse)'}; "
                    f"best that avoids collapse: {best} {sig(mean.mse[best], 4)}; tied with it: {', '.join(ties)}"
                    if best else "no method avoids collapse") + f"; {len(found)} of {len(mean)} methods avoid it: "
            + ", ".join(found)))
        key_ = part.iloc[0]["key"]
        if k == max(kk for dd, kk in groups if dd == data):  # the numbers the prose quotes: the largest K
            ranks = ranking(part).set_index("method")
            by_mse = sorted(found, key=lambda m: mean.mse[m])
            numbers.update({
                f"{key_}_k": int(k), f"{key_}_n_seeds": int(part.seed.nunique()), f"{key_}_n_avoid": len(found),
                f"{key_}_n_methods": len(mean),
                f"{key_}_usage_fix": float(mean.usage[PAPER_FIX]), f"{key_}_mse_fix": float(mean.mse[PAPER_FIX]),
                f"{key_}_usage_baseline": float(mean.usage[BASELINE]), f"{key_}_mse_baseline": float(mean.mse[BASELINE]),
                f"{key_}_mse_best": float(mean.mse[best]) if best else float("nan"),
                f"{key_}_usage_best": float(mean.usage[best]) if best else float("nan"),
                f"{key_}_fix_rank": ranks.loc[PAPER_FIX, "rank"] if fix_avoids else "– (it does not avoid collapse)",
                f"{key_}_time_best": float(mean.time_vs_baseline[best]) if best else float("nan"),
                f"{key_}_best": best or "none", f"{key_}_tied": ", ".join(ties) or "none",
                f"{key_}_n_tied": len(ties), f"{key_}_avoiding": ", ".join(by_mse) or "none",
                f"{key_}_collapsing": ", ".join(m for m in mean.index if m not in found) or "none",
            })
            others = [m for m in ties if m != best]
            lines.append(f"on {data} (K = {k}) {len(found)} of {len(mean)} methods avoid collapse, the paper's fix "
                         + (f"ranks {ranks.loc[PAPER_FIX, 'rank']} of them by MSE ({sig(mean.mse[PAPER_FIX])}; best "
                            f"{best}, {sig(mean.mse[best])}" + (f", tied with {', '.join(others)}" if others else "")
                            + ")" if fix_avoids else
                            f"does not ({mean.usage[PAPER_FIX]:.0%} of its tokens in use)"))
    headline = "Keeping at least half the tokens in use: " + "; ".join(lines) + "."
    return Verdict("Fixes", "The paper's fix among the fixes people use", FIXES_RULE, conditions, numbers,
                   statement=FIXES_QUESTION, headline=headline, seeds=_seeds(df), role="finding")


# === measuring_collapse: does per-batch perplexity stand in for the whole-set one? ==========

PQ_RATIO_MAX = 0.9   # per-batch / whole-set perplexity: at most this, i.e. at least 10% below
PQ_SETTINGS = {"synthetic": "C1's setting", "cifar10": "C3's setting (CIFAR-10)"}  # a setting's name in the chapter

PQ1_QUESTION = ("A training loop logs perplexity per batch; this study measures it over the whole evaluation set. "
                "Can the per-batch number stand in for the whole-set one?")

PQ1_RULE = (
    "Per-batch perplexity *understates* the codebook's perplexity if, at the training batch (as many tokens as one "
    "training step quantizes: the batch size times the positions per example), the mean over the evaluation set's "
    "batches, taken in order, of each batch's perplexity is at most "
    f"{PQ_RATIO_MAX:.0%} of the whole-set perplexity over every evaluation token (at least "
    f"{1 - PQ_RATIO_MAX:.0%} below it), in every seed and both regimes. One condition per setting: C1's (the "
    "Gaussian mixture and the MLP) and C3's (CIFAR-10 and the convolutional model).")


def batch_ratio(t: pd.DataFrame) -> float:
    """PQ1's statistic (runs of one setting and seed): the largest, over the runs (the
    regimes), of per-batch perplexity at the training batch / whole-set perplexity;
    NaN without runs or where a perplexity is missing."""
    ratios = t.batch_perplexity / t.perplexity
    return float(ratios.max()) if len(ratios) and not ratios.isna().any() else math.nan


def check_batch_understates(df: pd.DataFrame) -> Verdict:
    """PQ1 on one row per run (columns setting, regime, seed, codebook_size,
    batch_tokens, perplexity (whole set), batch_perplexity (mean over in-order batches
    of batch_tokens tokens)): one condition per setting, in the table's order."""
    conditions, numbers, parts = [], {}, []
    for setting, d in df.groupby("setting", sort=False):
        k, b = int(d.codebook_size.iloc[0]), int(d.batch_tokens.iloc[0])
        name = PQ_SETTINGS.get(setting, setting)
        ratios = d.batch_perplexity / d.perplexity
        c = rules.condition(
            f"{name}: per-batch perplexity at the training batch ({b} tokens, {b / k:g} K, K = {k}) at most "
            f"{PQ_RATIO_MAX:.0%} of the whole-set perplexity, both regimes, in every seed", d, batch_ratio, "<=",
            PQ_RATIO_MAX, what="the larger regime's per-batch / whole-set perplexity",
            detail="; ".join(f"{r}: " + ", ".join(f"{v:.2f}" for v in ratios[(d.regime == r).to_numpy()])
                             for r in dict.fromkeys(d.regime)))
        conditions.append(c)
        numbers.update({f"{setting}_k": k, f"{setting}_batch_tokens": b, f"{setting}_batch_over_k": b / k,
                        f"{setting}_worst": float(c.deciding)})
        for regime, r in d.groupby("regime", sort=False):
            rr = (r.batch_perplexity / r.perplexity)
            numbers.update({f"{setting}_{regime}_ratio": float(rr.mean()), f"{setting}_{regime}_ratio_max": float(rr.max()),
                            f"{setting}_{regime}_ratio_min": float(rr.min()),
                            f"{setting}_{regime}_batch": float(r.batch_perplexity.mean()),
                            f"{setting}_{regime}_whole": float(r.perplexity.mean())})
        parts.append(f"{name} {ratios.min():.0%}–{ratios.max():.0%} (batch of {b} tokens, K = {k})")
    if not conditions:
        conditions.append(_not_judged("per-batch against whole-set perplexity", "no runs"))
    else:
        numbers["worst"] = max(c.deciding for c in conditions)
    headline = ("At the training batch, per-batch perplexity is this share of the whole-set perplexity: "
                + "; ".join(parts) + ".")
    return Verdict("PQ1", "Per-batch perplexity understates the codebook", PQ1_RULE, conditions, numbers,
                   statement=PQ1_QUESTION, headline=headline, seeds=_seeds(df), role="finding")


# === usage_growth: does codebook use fall as the codebook grows? ============================

GROW_HALF = 0.5   # usage below this share of the K tokens: the codebook has lost half of them

GROW_QUESTION = ("As the codebook grows, does the share of its tokens in use fall? At what K does it fall below half "
                 "when the codebook starts from the untrained encoder (baseline), and does it fall below half at "
                 "all when it starts from the pretrained one (pretrain)?")

GROW1_RULE = (
    "Usage is the share of the K tokens that are the nearest token of at least one test-set embedding, counted over "
    "the whole test set (the Protocol's measure). GROW1 holds if both: (a) *baseline falls below half*: in every "
    f"seed, baseline's usage is below {GROW_HALF:.0%} at some K of the sweep (statistic: each seed's lowest baseline "
    f"usage over the sweep's K; comparison: < {GROW_HALF:g}); and (b) *pretrain does not*: in every seed, pretrain's "
    f"usage is at least {GROW_HALF:.0%} at every K of the sweep (statistic: each seed's lowest pretrain usage over the "
    f"sweep's K; comparison: ≥ {GROW_HALF:g}). Reported beside the verdict, not judged: the K at which each regime's "
    f"usage falls below half, the smallest K of the sweep whose seed-mean usage is below {GROW_HALF:.0%} (and each "
    "seed's own), and the perplexity as a share of K.")


def lowest_usage(regime: str):
    """GROW1's statistic for ``regime`` (runs of one seed, or any table): its lowest usage
    over the table's K; NaN without a run of that regime."""
    def statistic(t: pd.DataFrame) -> float:
        usage = t.loc[t.regime == regime, "usage"]
        return float(usage.min()) if len(usage) and not usage.isna().any() else math.nan
    return statistic


def k_below_half(t: pd.DataFrame, regime: str, threshold: float = GROW_HALF):
    """The smallest K at which ``regime``'s mean usage over the table's seeds is below
    ``threshold`` (one seed's runs: that seed's own), or None where no K is."""
    means = t[t.regime == regime].groupby("codebook_size").usage.mean().sort_index()
    below = means[means < threshold]
    return int(below.index[0]) if len(below) else None


def check_usage_growth(df: pd.DataFrame) -> Verdict:
    """GROW1 on one row per run (columns regime, seed, codebook_size, usage, perplexity):
    baseline's usage falls below half at some K, in every seed; pretrain's stays at or
    above half at every K, in every seed. Numbers: the K at which each regime falls below
    half (seed means, and per seed), and each regime's seed-mean usage and perplexity share
    (perplexity / K) at every K."""
    ks = sorted(int(k) for k in df.codebook_size.unique())
    k_min, k_max = (ks[0], ks[-1]) if ks else (0, 0)
    seeds = _seeds(df)
    numbers = {"k_min": k_min, "k_max": k_max, "threshold": GROW_HALF, "n_k": len(ks)}
    details = {}
    for regime in ("baseline", "pretrain"):
        rows = df[df.regime == regime]
        crossing = k_below_half(rows, regime)
        per_seed = {s: k_below_half(rows[rows.seed == s], regime) for s in seeds}
        numbers[f"k_half_{regime}"] = crossing if crossing is not None else 0   # 0: no K of the sweep
        numbers[f"k_half_{regime}_text"] = str(crossing) if crossing is not None else f"none up to K = {k_max}"
        numbers[f"k_half_{regime}_seeds"] = ", ".join(f"seed {s}: {v if v is not None else 'none'}"
                                                     for s, v in per_seed.items())
        means = rows.groupby("codebook_size")[["usage", "perplexity"]].mean()
        for k in means.index:
            numbers[f"usage_{regime}_{int(k)}"] = float(means.usage[k])
            numbers[f"share_{regime}_{int(k)}"] = float(means.perplexity[k] / k)
        if len(rows):
            numbers[f"usage_{regime}_kmax"] = float(means.usage.get(k_max, math.nan))
            numbers[f"share_{regime}_kmax"] = float(means.perplexity.get(k_max, math.nan) / k_max)
        details[regime] = "; ".join(
            f"seed {s}: " + ", ".join(f"K={int(k)} {u:.1%}" for k, u in
                                      rows[rows.seed == s].sort_values("codebook_size")[["codebook_size", "usage"]]
                                      .itertuples(index=False))
            for s in seeds if (rows.seed == s).any())
    conditions = []
    for regime, comparison, words in (("baseline", "<", "falls below"), ("pretrain", ">=", "stays at or above")):
        if not (df.regime == regime).any():
            conditions.append(_not_judged(f"{regime}'s usage {words} {GROW_HALF:.0%}", f"no {regime} runs"))
            continue
        scope_words = "at some K of the sweep" if regime == "baseline" else "at every K of the sweep"
        c = rules.condition(
            f"{regime}'s usage {words} {GROW_HALF:.0%} {scope_words} (K = {k_min} to {k_max}), in every seed", df,
            lowest_usage(regime), comparison, GROW_HALF, what=f"{regime}'s lowest usage over the sweep's K",
            detail=details[regime])
        conditions.append(c)
        numbers[f"lowest_{regime}"] = float(c.deciding)
    b, p = numbers["k_half_baseline_text"], numbers["k_half_pretrain_text"]
    headline = (f"Seed means over {len(seeds)} seeds, K = {k_min} to {k_max}: baseline's usage falls below "
                f"{GROW_HALF:.0%} at K = {b}" if numbers["k_half_baseline"] else
                f"Seed means over {len(seeds)} seeds, K = {k_min} to {k_max}: baseline's usage does not fall below "
                f"{GROW_HALF:.0%} ({b})")
    headline += (f"; pretrain's at K = {p}" if numbers["k_half_pretrain"] else f"; pretrain's does not ({p})")
    if "usage_baseline_kmax" in numbers and "usage_pretrain_kmax" in numbers:
        headline += (f"; at K = {k_max}, {pct(numbers['usage_baseline_kmax'])} of baseline's tokens are in use and "
                     f"{pct(numbers['usage_pretrain_kmax'])} of pretrain's")
    headline += "."
    return Verdict("GROW1", "Usage as the codebook grows: baseline falls below half, pretrain does not", GROW1_RULE,
                   conditions, numbers, statement=GROW_QUESTION, headline=headline, seeds=seeds, role="finding")
# === dead_code_reset: does a dead-code reset substitute for pretraining? ===================

RESET_SETTINGS = {"synthetic": "C1's setting", "cifar10": "C3's setting (CIFAR-10)"}  # a setting's name in the chapter
RESET_USAGE_SHARE = 0.95   # baseline + reset: tokens in use at least this share of pretrain's (5% below at most)
RESET_MSE_RATIO = 1.05     # baseline + reset: evaluation MSE at most this times pretrain's (5% above at most)

RESET1_QUESTION = ("Practitioners revive dead tokens during training instead of pretraining: a token whose moving "
                   "average of uses per batch falls below a threshold is replaced by an encoder output of the batch "
                   "(vector-quantize-pytorch's threshold_ema_dead_code). Does such a reset, without pretraining, "
                   "reach what pretraining reaches, and from which threshold?")

RESET1_RULE = (
    "A reset threshold *substitutes for pretraining* at a setting when, in every seed, the baseline regime with the "
    "dead-code reset at that threshold (quantization from step 0, no pretraining) ends training with at least "
    f"{RESET_USAGE_SHARE:.0%} of the tokens in use that the pretrain regime without a reset (the paper's fix, the "
    f"study's own quantizer) has in the same seed, and an evaluation MSE at most {RESET_MSE_RATIO - 1:.0%} above "
    "pretrain's in that seed. The finding holds if, at each setting (C1's: the Gaussian mixture and the MLP; C3's: "
    "CIFAR-10 and the convolutional model), at least one swept threshold substitutes for pretraining; one condition "
    "per setting. Thresholds are swept relative to the expected uses of a token per batch (the tokens a training "
    "step quantizes / K). Reported, not judged: the smallest swept threshold that substitutes, and whether every "
    "larger one swept does too.")


def substitution_scores(t: pd.DataFrame) -> pd.DataFrame:
    """RESET1's per-run measure on the runs of one setting (columns regime, reset (the
    threshold relative to the expected uses per batch; 0: no reset), seed, usage, mse): one
    row per baseline run with a reset (regime baseline, reset > 0), with its usage as a
    share of the reference's (the pretrain run without a reset in the same seed),
    ``usage_share``, its MSE relative to the reference's, ``mse_ratio``, and ``score`` =
    min(usage_share / RESET_USAGE_SHARE, RESET_MSE_RATIO / mse_ratio): at least 1 exactly
    when the run is within both tolerances (a ratio at its threshold gives exactly 1). A
    seed without its reference, or a missing metric, scores -inf (fails)."""
    reference = t[(t.regime == "pretrain") & (t.reset == 0)].groupby("seed")[["usage", "mse"]].first()
    runs = t[(t.regime == "baseline") & (t.reset > 0)]
    rows = []
    for reset, seed, usage, mse in zip(runs.reset, runs.seed, runs.usage, runs.mse):
        share = ratio = math.nan
        if seed in reference.index:
            ref_usage, ref_mse = float(reference.usage[seed]), float(reference.mse[seed])
            share = usage / ref_usage if ref_usage > 0 else math.nan
            ratio = mse / ref_mse if ref_mse > 0 else math.nan
        parts = [share / RESET_USAGE_SHARE, RESET_MSE_RATIO / ratio if ratio > 0 else math.nan]
        score = -math.inf if any(math.isnan(p) for p in parts) else min(parts)
        rows.append({"reset": float(reset), "seed": seed, "usage_share": share, "mse_ratio": ratio, "score": score})
    return pd.DataFrame(rows, columns=["reset", "seed", "usage_share", "mse_ratio", "score"])


def worst_per_threshold(t: pd.DataFrame) -> pd.Series:
    """Per relative threshold (ascending), the worst seed's :func:`substitution_scores`
    score: at least 1 exactly when that threshold substitutes for pretraining in every seed."""
    scores = substitution_scores(t)
    return scores.groupby("reset").score.min().sort_index() if len(scores) else pd.Series(dtype=float)


def best_substitution(t: pd.DataFrame) -> float:
    """RESET1's statistic (runs of one setting): the best threshold's worst-seed score
    (:func:`worst_per_threshold`); -inf without a baseline run with a reset."""
    worst = worst_per_threshold(t)
    return float(worst.max()) if len(worst) else -math.inf


def expected_uses(t: pd.DataFrame) -> float:
    """The expected uses of a token per batch at a setting: batch_tokens / codebook_size."""
    return float(t.batch_tokens.iloc[0]) / float(t.codebook_size.iloc[0])


def check_reset_substitutes(df: pd.DataFrame) -> Verdict:
    """RESET1 on one row per run (columns setting, regime, reset (relative threshold, 0
    for the runs without a reset), seed, codebook_size, batch_tokens (tokens a training
    step quantizes), usage, perplexity, mse): one condition per setting, in the table's
    order, its statistic :func:`best_substitution` over all seeds."""
    conditions, numbers, parts = [], {}, []
    for setting, d in df.groupby("setting", sort=False):
        name = RESET_SETTINGS.get(setting, setting)
        k, expected = int(d.codebook_size.iloc[0]), expected_uses(d)
        scores = substitution_scores(d)
        worst = worst_per_threshold(d)
        detail = "; ".join(
            f"{r:g}× ({r * expected:.3g} uses a batch): usage share "
            + ", ".join(f"{v:.2f}" for v in scores[scores.reset == r].usage_share)
            + ", MSE ratio " + ", ".join(f"{v:.3f}" for v in scores[scores.reset == r].mse_ratio)
            for r in worst.index) or "no baseline run with a reset"
        c = rules.condition(
            f"{name}: at least one reset threshold brings baseline within {1 - RESET_USAGE_SHARE:.0%} of pretrain's "
            f"usage and {RESET_MSE_RATIO - 1:.0%} of its MSE, in every seed (K = {k}, {expected:g} expected uses a "
            "batch)", d, best_substitution, ">=", 1, scope="all seeds",
            what=f"the best threshold's worst seed of min(usage share / {RESET_USAGE_SHARE:g}, "
                 f"{RESET_MSE_RATIO:g} / MSE ratio)", detail=detail)
        conditions.append(c)
        substituting = [float(r) for r in worst.index if worst[r] >= 1]
        first = substituting[0] if substituting else None
        above = [float(r) for r in worst.index if first is not None and r >= first]
        reference = d[(d.regime == "pretrain") & (d.reset == 0)]
        plain = d[(d.regime == "baseline") & (d.reset == 0)]
        best = float(worst.idxmax()) if len(worst) else math.nan
        numbers.update({
            f"{setting}_k": k, f"{setting}_expected": expected, f"{setting}_n_thresholds": int(len(worst)),
            f"{setting}_n_substitute": len(substituting), f"{setting}_score": float(c.deciding),
            f"{setting}_best": best, f"{setting}_best_absolute": best * expected,
            f"{setting}_from": first if first is not None else "none",
            f"{setting}_from_absolute": first * expected if first is not None else "none",
            f"{setting}_all_above": bool(first is not None and substituting == above),
            f"{setting}_usage_pretrain": float(reference.usage.mean()), f"{setting}_mse_pretrain": float(reference.mse.mean()),
            f"{setting}_usage_baseline": float(plain.usage.mean()), f"{setting}_mse_baseline": float(plain.mse.mean()),
        })
        if len(worst):
            at_best = scores[scores.reset == best]
            numbers.update({f"{setting}_best_usage_share": float(at_best.usage_share.mean()),
                            f"{setting}_best_mse_ratio": float(at_best.mse_ratio.mean())})
        parts.append(f"at {name} " + (f"from {first:g}× the expected uses a batch ({first * expected:.3g}), "
                                      f"{len(substituting)} of {len(worst)} thresholds" if first is not None else
                                      f"at none of the {len(worst)} thresholds swept"))
    if not conditions:
        conditions.append(_not_judged("a reset substitutes for pretraining", "no runs"))
    headline = (f"Baseline with a dead-code reset comes within {1 - RESET_USAGE_SHARE:.0%} of pretrain's usage and "
                f"{RESET_MSE_RATIO - 1:.0%} of its MSE in every seed " + "; ".join(parts) + ".")
    return Verdict("RESET1", "A dead-code reset substitutes for pretraining", RESET1_RULE, conditions, numbers,
                   statement=RESET1_QUESTION, headline=headline, seeds=_seeds(df), role="finding")


# === knobs: which knobs move collapse? =======================================================

KNOB_SETTINGS = {"synthetic": "C1's setting", "cifar10": "C3's setting (CIFAR-10)"}  # a setting's name in the chapter
KNOB_DEFAULT = "default"       # the knob value of the runs with every knob at its default: C1's and C3's own runs
KNOB_COLLAPSE_SHARE = 0.75     # baseline's usage below this share of pretrain's (default): the collapse persists
KNOB_RESCUE_USAGE = RESET_USAGE_SHARE   # rescued: usage at least this share of pretrain's (default), as RESET1
KNOB_RESCUE_MSE = RESET_MSE_RATIO       # rescued: MSE at most this times pretrain's (default), as RESET1

KNOB1_QUESTION = ("Practitioners whose codebook collapses turn the knobs they have: the learning rate, the commitment "
                  "weight β, the EMA decay, the batch size, the optimizer, the latent dimension, or a codebook learned "
                  "by gradient instead of moving averages. Turned one at a time, does any of them undo baseline's "
                  "tokens collapse, or does it persist under every one; and which knob, if any, rescues baseline "
                  "without pretraining?")

KNOB1_RULE = (
    "One knob at a time, every other setting at the protocol's value. The *reference* is the pretrain regime with "
    "every knob at its default (the paper's fix, exactly C1's and C3's runs). Baseline's collapse *persists* under a "
    "knob value when, in every seed, the baseline regime with that value (quantization from step 0, no pretraining) "
    f"ends training with fewer than {KNOB_COLLAPSE_SHARE:.0%} as many tokens in use as the reference has in the same "
    "seed. KNOB1 holds if, at each setting (C1's: the Gaussian mixture and the MLP; C3's: CIFAR-10 and the "
    "convolutional model), the collapse persists under every knob value swept there, the default included; one "
    "condition per setting (statistic: in each seed, the largest over the knob values of baseline's usage / the "
    f"reference's usage; comparison: < {KNOB_COLLAPSE_SHARE:g}, in every seed). A run without a usage (or a seed "
    "without its reference) fails the condition. Reported, not judged: the knob values that *rescue* baseline, "
    f"bringing it to at least {KNOB_RESCUE_USAGE:.0%} of the reference's usage and at most {KNOB_RESCUE_MSE - 1:.0%} "
    "above its MSE in every seed (RESET1's tolerances), and what each knob value does to the pretrain regime.")


def relative_to_default(t: pd.DataFrame) -> pd.DataFrame:
    """Each run of ``t`` (columns setting (optional), knob, regime, seed, usage, mse) with
    its usage and MSE relative to the reference's in the same setting and seed (the pretrain
    run with every knob at its default, :data:`KNOB_DEFAULT`): columns ``usage_share`` =
    usage / reference usage and ``mse_ratio`` = mse / reference MSE; NaN where the seed has
    no reference or the reference's value is not positive."""
    out = t.copy()
    by = ["setting", "seed"] if "setting" in t else ["seed"]
    ref = t[(t.regime == "pretrain") & (t.knob == KNOB_DEFAULT)].groupby(by)[["usage", "mse"]].first()
    ref = ref.where(ref > 0).rename(columns={"usage": "_ref_usage", "mse": "_ref_mse"})
    out = out.join(ref, on=by)
    out["usage_share"] = out.usage / out._ref_usage
    out["mse_ratio"] = out.mse / out._ref_mse
    return out.drop(columns=["_ref_usage", "_ref_mse"])


def largest_baseline_share(t: pd.DataFrame) -> float:
    """KNOB1's statistic (runs of one setting, one seed or more): the largest, over the
    baseline runs (every knob value), of usage / the reference's usage; NaN without a
    baseline run or where a share is missing (a missing usage, no reference), which fails."""
    shares = relative_to_default(t).loc[lambda d: d.regime == "baseline", "usage_share"]
    return float(shares.max()) if len(shares) and not shares.isna().any() else math.nan


def rescue_scores(t: pd.DataFrame) -> pd.DataFrame:
    """Per baseline run of one setting (columns knob, seed, usage_share, mse_ratio, score):
    score = min(usage_share / KNOB_RESCUE_USAGE, KNOB_RESCUE_MSE / mse_ratio), at least 1
    exactly when the run is within both tolerances of the reference; -inf where a ratio is
    missing."""
    d = relative_to_default(t)
    d = d[d.regime == "baseline"]
    score = np.minimum(d.usage_share / KNOB_RESCUE_USAGE, KNOB_RESCUE_MSE / d.mse_ratio.where(d.mse_ratio > 0))
    return d.assign(score=score.fillna(-math.inf))[["knob", "seed", "usage_share", "mse_ratio", "score"]]


def rescuing(t: pd.DataFrame) -> list:
    """The knob values (in the table's order) that rescue baseline at one setting: the
    worst seed's :func:`rescue_scores` score at least 1."""
    scores = rescue_scores(t)
    worst = scores.groupby("knob", sort=False).score.min()
    return [k for k, v in worst.items() if v >= 1]


def check_knobs(df: pd.DataFrame) -> Verdict:
    """KNOB1 on one row per run (columns setting, knob (a knob value's name;
    :data:`KNOB_DEFAULT` for every knob at its default), regime, seed, usage, mse,
    perplexity): one condition per setting, in the table's order, its statistic
    :func:`largest_baseline_share` in every seed. Numbers per setting: the knob value whose
    baseline comes closest to the reference (largest seed-mean usage share), the rescuing
    values, the reference's and the default baseline's usage and MSE."""
    conditions, numbers, parts = [], {}, []
    for setting, d in df.groupby("setting", sort=False):
        name = KNOB_SETTINGS.get(setting, setting)
        rel = relative_to_default(d)
        base = rel[rel.regime == "baseline"]
        values = list(dict.fromkeys(base.knob))
        means = base.groupby("knob", sort=False)[["usage_share", "mse_ratio"]].mean()
        detail = "; ".join(f"{k}: " + ", ".join(f"{v:.2f}" for v in base[base.knob == k].usage_share)
                           for k in values) or "no baseline run"
        c = rules.condition(
            f"{name}: under every knob value swept ({len(values)}, the default included), baseline's usage stays "
            f"below {KNOB_COLLAPSE_SHARE:.0%} of pretrain's at the default, in every seed", d, largest_baseline_share,
            "<", KNOB_COLLAPSE_SHARE, what="the largest over the knob values of baseline's usage / pretrain's "
                                          "(default) usage", detail=detail)
        conditions.append(c)
        closest = means.usage_share.idxmax() if means.usage_share.notna().any() else "none"
        saved = rescuing(d)
        ref = d[(d.regime == "pretrain") & (d.knob == KNOB_DEFAULT)]
        plain = d[(d.regime == "baseline") & (d.knob == KNOB_DEFAULT)]
        numbers.update({
            f"{setting}_n_values": len(values), f"{setting}_largest_share": float(c.deciding),
            f"{setting}_closest": closest,
            f"{setting}_closest_share": float(means.usage_share.get(closest, math.nan)),
            f"{setting}_closest_mse_ratio": float(means.mse_ratio.get(closest, math.nan)),
            f"{setting}_rescuing": ", ".join(saved) if saved else "none", f"{setting}_n_rescuing": len(saved),
            f"{setting}_usage_pretrain": float(ref.usage.mean()), f"{setting}_mse_pretrain": float(ref.mse.mean()),
            f"{setting}_usage_baseline": float(plain.usage.mean()), f"{setting}_mse_baseline": float(plain.mse.mean()),
            f"{setting}_default_share": float(means.usage_share.get(KNOB_DEFAULT, math.nan)),
        })
        parts.append(f"at {name} the closest is {closest} ({pct(numbers[f'{setting}_closest_share'])} of pretrain's "
                     f"usage, seed mean), rescuing: {numbers[f'{setting}_rescuing']}")
    if not conditions:
        conditions.append(_not_judged("baseline's collapse persists under every knob", "no runs"))
    headline = (f"Baseline's usage against pretrain's at the default (collapse persists below "
                f"{KNOB_COLLAPSE_SHARE:.0%}): " + "; ".join(parts) + ".")
    return Verdict("KNOB1", "Baseline's collapse persists under every knob", KNOB1_RULE, conditions, numbers,
                   statement=KNOB1_QUESTION, headline=headline, seeds=_seeds(df), role="finding")
