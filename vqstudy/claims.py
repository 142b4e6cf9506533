"""Claim checks and the verdicts they record (the book's *Protocol* page, "Claims and
their checks").

Each check states its rule as text (shown in the chapter before the numbers), tests it
in every seed, and returns a :class:`Verdict`: holds / does not hold, every condition
with the numbers behind it, and a one-line headline for the scorecard. A chapter
records its verdicts with :func:`record` (``Chapter.publish``) as one JSON file beside
the executed notebook (:func:`verdict_path`), where the scorecard finds them.

A rule is never loosened to make a claim pass. When a rule changes, the old check stays
here, is computed on the same runs and recorded with ``role="superseded"``; the book's
rule log (:data:`RULE_CHANGES`) shows both verdicts.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from vqstudy import rules
from vqstudy.rules import Condition

ROLES = ("claim", "finding", "superseded")


@dataclass
class Verdict:
    claim: str                 # a short id: C1, C3a, ...
    title: str
    rule: str
    conditions: list[Condition]
    numbers: dict
    statement: str = ""        # what is tested: the paper's words where it is the paper's claim
    headline: str = ""         # the result in one plain sentence, with its key number
    seeds: list = field(default_factory=list)
    role: str = "claim"        # claim | finding (beyond the paper) | superseded (an old rule, see RULE_CHANGES)
    profile: str = ""
    notebook: str = ""
    steps: list = field(default_factory=list)  # total_steps of the runs judged: the schedule it belongs to
    runs: int = 0              # runs judged, and how many of them converged (vqstudy.convergence)
    converged: int = 0
    unmeasured: int = 0        # runs whose curves cannot tell (none recorded): counted as not converged
    more_seeds: str = ""       # fragile at first: how more seeds moved it, or how many would settle it (Chapter.settle)

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.conditions)

    @property
    def outcome(self) -> str:
        return "holds" if self.holds else "does not hold"

    @property
    def fragile(self) -> bool:
        """Whether the outcome could flip with one seed left out or under floating-point
        noise (:func:`vqstudy.rules.verdict_fragile`)."""
        return bool(rules.verdict_fragile(self.conditions))

    def fragility(self) -> str:
        """``Fragile: <condition> (margin m)``, or "" for a verdict that is not."""
        deciding = rules.verdict_fragile(self.conditions)
        if not deciding:
            return ""
        return "Fragile: " + "; ".join(f"{c.name}, {c.margin_text().split('; ')[0]}" for c in deciding) + "."

    def smallest_margin(self) -> Condition | None:
        """The condition whose margin is smallest in seed spreads (else in its own units)."""
        measured = [c for c in self.conditions if c.margin is not None and c.margin == c.margin]
        if not measured:
            return None
        return min(measured, key=lambda c: (c.margin_in_spreads is None,
                                            c.margin_in_spreads if c.margin_in_spreads is not None else c.margin))

    def to_dict(self) -> dict:
        return {**asdict(self), "holds": self.holds, "fragile": self.fragile, "fragility": self.fragility(),
                "schedule_text": self.schedule_text()}

    def judged_on(self, table: pd.DataFrame) -> "Verdict":
        """Record the schedule of the runs in ``table`` and how many converged (its
        ``total_steps`` and ``converged`` columns, :class:`vqstudy.chapter.RunSet`, by the
        rule of :mod:`vqstudy.convergence`)."""
        self.steps = sorted(int(s) for s in table["total_steps"].unique()) if "total_steps" in table else []
        self.runs = len(table)
        known = table["converged"].dropna() if "converged" in table else pd.Series(dtype=bool)
        self.converged, self.unmeasured = int(known.astype(bool).sum()), len(table) - len(known)
        return self

    def schedule_text(self) -> str:
        """``at 1000 steps; 4 of 30 runs converged``, or "" when unknown."""
        return schedule_sentence(asdict(self))

    def checklist(self) -> str:
        """The verdict as Markdown: the outcome, then each condition ticked or crossed
        with the numbers it was judged on and its margin (lines wrap; nothing is clipped)."""
        held = sum(c.holds for c in self.conditions)
        where = f" {self.schedule_text()}" if self.schedule_text() else ""
        lines = [f"**{self.claim} {self.outcome}{', fragile' if self.fragile else ''}** at profile "
                 f"`{self.profile}`, seeds {', '.join(map(str, self.seeds))}{where}: {held} of "
                 f"{len(self.conditions)} conditions hold.", ""]
        # ✓ and ✗, not emoji: they render in the fonts every browser has (DejaVu, Noto Sans)
        for c in self.conditions:
            margin = c.margin_text()
            lines.append(f"- {'✓' if c.holds else '✗'} **{c.name}**: {c.detail}" + (f". *{margin}*" if margin else ""))
        if self.fragility():
            lines += ["", f"*{self.fragility()}*"]
        if self.more_seeds:
            lines += ["", f"*More seeds.* {self.more_seeds}"]
        return "\n".join(lines)


def schedule_steps(steps: list) -> str:
    """``1000 steps``, or ``1000–4000 steps`` for runs of several lengths."""
    return f"{steps[0]} steps" if len(steps) == 1 else f"{min(steps)}–{max(steps)} steps"


def schedule_sentence(verdict: dict) -> str:
    """``at 1000 steps; 4 of 30 runs converged`` from a verdict dict, saying how many runs
    recorded no curves to judge convergence by ("convergence not measured" when none did)."""
    if not verdict.get("steps") or not verdict.get("runs"):
        return ""
    runs, unmeasured = verdict["runs"], verdict.get("unmeasured", 0)
    where = f"at {schedule_steps(verdict['steps'])}; "
    if unmeasured >= runs:
        return where + "convergence not measured (no training curves recorded)"
    return where + f"{verdict.get('converged', 0)} of {runs} runs converged" + \
        (f" ({unmeasured} without curves to tell)" if unmeasured else "")


def verdict_path(folder, notebook: str) -> Path:
    """The one place a chapter's verdict file is named."""
    return Path(folder) / f"{notebook}.verdict.json"


def record(verdicts: list[Verdict], folder, notebook: str) -> Path:
    """Write the chapter's verdicts, machine-readable, to :func:`verdict_path`."""
    for v in verdicts:
        if v.role not in ROLES:
            raise ValueError(f"verdict {v.claim}: role={v.role!r} is invalid: must be one of {list(ROLES)}")
    path = verdict_path(folder, notebook)
    path.write_text(json.dumps({"notebook": notebook, "verdicts": [v.to_dict() for v in verdicts]},
                               indent=2, default=float))
    return path


def read(folder, notebook: str) -> list[dict] | None:
    """The verdicts a chapter recorded (as dicts), or ``None`` when it recorded none."""
    path = verdict_path(folder, notebook)
    return json.loads(path.read_text())["verdicts"] if path.exists() else None


def seed_means(df: pd.DataFrame, by: str, metric: str) -> pd.DataFrame:
    """Mean over seeds of ``metric``: one row per value of ``by``, one column per regime."""
    return df.pivot_table(index=by, columns="regime", values=metric, aggfunc="mean")


def spearman(x, y) -> float:
    """Rank correlation of two sequences (0 when either is constant)."""
    rho = pd.Series(list(x)).corr(pd.Series(list(y)), method="spearman")
    return 0.0 if pd.isna(rho) else float(rho)


NAMES = {"perplexity": "perplexity", "usage": "usage", "codebook_spread": "codebook spread", "mse": "MSE",
         "probe_accuracy": "linear-probe accuracy", "fisher_ratio": "Fisher ratio"}


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal, the same for every number of a sentence
    (15.0% to 15.8%, not 15% to 15.8%)."""
    return f"{100 * value:.1f}%"


def sig(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, its zeros kept (an MSE of 1.00, not 1;
    0.0500), without an exponent (1024 in full); "nan" when it is not a number."""
    if value is None or not math.isfinite(value):
        return "nan"
    if value == 0:
        return "0"
    text = f"{value:#.{digits}g}"
    if "e" in text:
        return f"{value:.0f}" if abs(value) >= 1 else f"{value:.{digits - 1}e}"
    return text[:-1] if text.endswith(".") else text


# --- C1: tokens collapse --------------------------------------------------------------

C1_CLAIM = (
    "“tokens collapse, where discrete codebook tokens become concentrated around a limited subset of "
    "embeddings … primarily caused by using outputs from an untrained encoder for codebook initialization” "
    "(summary); pretraining the autoencoder first is the paper's fix."
)

C1_RULE = (
    "At the largest K, in every seed: baseline has lower perplexity, lower usage and a smaller "
    "codebook spread than pretrain, and pretrain has the lower MSE. And the pretrain/baseline "
    "ratio of seed-mean perplexities grows with K: it is higher at the largest K than at the "
    "smallest, and its rank correlation with K is positive."
)


def regime_gap(metric: str, lower: str):
    """The statistic "how much lower ``lower``'s ``metric`` is than the other regime's"
    (runs of one seed at one K: one row per regime)."""
    def statistic(t: pd.DataFrame) -> float:
        m = t.groupby("regime")[metric].mean()
        return float(m["pretrain"] - m["baseline"]) if lower == "baseline" else float(m["baseline"] - m["pretrain"])
    return statistic


def per_seed_pairs(t: pd.DataFrame, metric: str, index: str = "seed") -> str:
    """``seed 0: baseline 12.3 vs pretrain 45.6; ...``: the numbers behind a regime gap."""
    wide = t.pivot_table(index=index, columns="regime", values=metric)
    return "; ".join(f"{index} {i}: baseline {sig(row['baseline'], 4)} vs pretrain {sig(row['pretrain'], 4)}"
                     for i, row in wide.iterrows())


def perplexity_ratio(t: pd.DataFrame) -> pd.Series:
    """Pretrain/baseline ratio of seed-mean perplexities, per K."""
    ppl = seed_means(t, "codebook_size", "perplexity")
    return ppl["pretrain"] / ppl["baseline"]


def check_tokens_collapse(df: pd.DataFrame) -> Verdict:
    """C1 on a table with columns regime, seed, codebook_size, perplexity, usage,
    codebook_spread, mse (one row per run)."""
    k_max, k_min = df.codebook_size.max(), df.codebook_size.min()
    at_max = df[df.codebook_size == k_max]
    seeds = sorted(at_max.seed.unique().tolist())

    def per_seed(metric, lower):
        other = "pretrain" if lower == "baseline" else "baseline"
        return rules.condition(f"K={k_max}: {lower} has the lower {NAMES[metric]} in every seed", at_max,
                               regime_gap(metric, lower), ">", 0,
                               what=f"{other} − {lower} {NAMES[metric]}", detail=per_seed_pairs(at_max, metric))

    ratio = perplexity_ratio(df)
    rho = spearman(ratio.index, ratio) if len(ratio) > 1 else 0.0
    ratios = ", ".join(f"K={k}: {sig(v)}" for k, v in ratio.items())
    conditions = [per_seed("perplexity", "baseline"), per_seed("usage", "baseline"),
                  per_seed("codebook_spread", "baseline"), per_seed("mse", "pretrain"),
                  rules.condition("the pretrain/baseline perplexity ratio grows with K: higher at the largest K than "
                                  "at the smallest", df,
                                  lambda t: float(perplexity_ratio(t)[k_max] / perplexity_ratio(t)[k_min]), ">", 1,
                                  scope="all seeds", what=f"ratio at K={k_max} / ratio at K={k_min}", detail=ratios),
                  rules.condition("the pretrain/baseline perplexity ratio grows with K: positive rank correlation", df,
                                  lambda t: spearman(perplexity_ratio(t).index, perplexity_ratio(t))
                                  if len(ratio) > 1 else 0.0, ">", 0,
                                  scope="all seeds", what="Spearman ρ(K, ratio)")]
    means = at_max.pivot_table(index="seed", columns="regime",
                               values=["perplexity", "usage", "codebook_spread", "mse"]).mean()
    numbers = {
        "k_max": int(k_max),
        **{f"{m}_{r}": float(means[(m, r)]) for m in ("perplexity", "usage", "codebook_spread", "mse")
           for r in ("baseline", "pretrain")},
        "ratio_at_kmin": float(ratio[k_min]), "ratio_at_kmax": float(ratio[k_max]), "ratio_spearman": rho,
    }
    headline = (f"At K = {int(k_max)}, baseline uses {pct(numbers['usage_baseline'])} of its tokens and pretrain "
                f"{pct(numbers['usage_pretrain'])}; pretrain's perplexity is {sig(ratio[k_max])}× baseline's.")
    return Verdict("C1", "Tokens collapse (synthetic data)", C1_RULE, conditions, numbers,
                   statement=C1_CLAIM, headline=headline, seeds=seeds)


# --- C2: embeddings collapse ---------------------------------------------------------

C2_CLAIM = (
    "“insufficient encoder capacity (limited hidden layer size) causes representations from different "
    "input classes to merge” (abstract, as quoted in the summary)."
)

C2_RULE = (
    "In the pretrain regime, in every seed, across every encoder width: the Spearman rank correlation "
    "between width and held-out linear-probe accuracy is at least 0.7, between width and the Fisher ratio "
    "at least 0.7, and between width and MSE at most -0.7 (a trend over all widths, not two end points); "
    "and at the smallest width the classes merge: the linear probe misclassifies at least 10% of "
    "held-out embeddings (accuracy below 0.9)."
)

C2_RULE_V1 = (
    "In the pretrain regime, in every seed: from the smallest to the largest encoder width, the "
    "held-out linear-probe accuracy and the Fisher ratio of the embeddings rise and the MSE falls; "
    "and at the smallest width the classes merge: the linear probe misclassifies at least 10% of "
    "held-out embeddings (accuracy below 0.9)."
)

TREND_RHO = 0.7


def _by_width(df: pd.DataFrame):
    pre = df[df.regime == "pretrain"]
    seeds = sorted(pre.seed.unique().tolist())
    by = pre.pivot_table(index="seed", columns="hidden", values=["probe_accuracy", "fisher_ratio", "mse"])
    return by, seeds, pre.hidden.min(), pre.hidden.max()


def at_width(metric: str, width) -> callable:
    """The statistic "``metric`` at encoder width ``width``" (pretrain runs; seed mean)."""
    return lambda t: float(t[(t.regime == "pretrain") & (t.hidden == width)][metric].mean())


def width_trend(metric: str) -> callable:
    """The statistic "Spearman ρ between width and ``metric``" (pretrain runs of one seed)."""
    def statistic(t: pd.DataFrame) -> float:
        by = t[t.regime == "pretrain"].groupby("hidden")[metric].mean()
        return spearman(by.index, by)
    return statistic


def _merge_condition(df, by, seeds, w_min) -> Condition:
    return rules.condition(f"classes merge at width {w_min}: probe accuracy < 0.9 in every seed", df,
                           at_width("probe_accuracy", w_min), "<", 0.9, what=f"probe accuracy at width {w_min}")


def _c2_numbers(by, w_min, w_max) -> dict:
    means = by.mean()
    return {"w_min": int(w_min), "w_max": int(w_max),
            **{f"{m}_{tag}": float(means[(m, w)]) for m in ("probe_accuracy", "fisher_ratio", "mse")
               for tag, w in (("wmin", w_min), ("wmax", w_max))}}


def check_embeddings_collapse(df: pd.DataFrame, claim: str = "C2",
                              title: str = "Embeddings collapse from too little encoder capacity") -> Verdict:
    """C2 on a table with columns regime, seed, hidden (encoder width), probe_accuracy,
    fisher_ratio, mse (one row per run); judged on the pretrain regime."""
    by, seeds, w_min, w_max = _by_width(df)
    widths = sorted(by["mse"].columns)
    pre = df[df.regime == "pretrain"]

    def trend(metric, sign):
        word = "rises" if sign > 0 else "falls"
        values = "; ".join(f"seed {s}: " + ", ".join(sig(by[(metric, w)][s]) for w in widths) for s in seeds)
        return rules.condition(f"{NAMES[metric]} {word} with width: Spearman ρ {'≥' if sign > 0 else '≤'} "
                               f"{sign * TREND_RHO:g} in every seed", pre, width_trend(metric),
                               ">=" if sign > 0 else "<=", sign * TREND_RHO,
                               what=f"Spearman ρ(width, {NAMES[metric]})", detail=f"widths {widths}: {values}")

    conditions = [trend("probe_accuracy", 1), trend("fisher_ratio", 1), trend("mse", -1),
                  _merge_condition(pre, by, seeds, w_min)]
    rhos = {m: c.values for m, c in zip(("probe_accuracy", "fisher_ratio", "mse"), conditions)}
    numbers = {**_c2_numbers(by, w_min, w_max),
               **{f"rho_{m}": float(min(r.values(), key=abs)) for m, r in rhos.items()}}
    headline = (f"From width {int(w_min)} to {int(w_max)}, the probe's accuracy goes from "
                f"{pct(numbers['probe_accuracy_wmin'])} to {pct(numbers['probe_accuracy_wmax'])} and MSE from "
                f"{sig(numbers['mse_wmin'])} to {sig(numbers['mse_wmax'])}.")
    return Verdict(claim, title, C2_RULE, conditions, numbers, statement=C2_CLAIM, headline=headline, seeds=seeds)


def check_embeddings_collapse_v1(df: pd.DataFrame) -> Verdict:
    """C2's first rule (two end points), kept for the rule log; superseded by
    :func:`check_embeddings_collapse`."""
    by, seeds, w_min, w_max = _by_width(df)
    pre = df[df.regime == "pretrain"]

    def change(metric, direction):
        a, b = by[(metric, w_min)], by[(metric, w_max)]
        sign = 1 if direction == "rises" else -1
        return rules.condition(f"{NAMES[metric]} {direction} from width {w_min} to {w_max} in every seed", pre,
                               lambda t: sign * (at_width(metric, w_max)(t) - at_width(metric, w_min)(t)), ">", 0,
                               what=f"{NAMES[metric]} at width {w_max} − at width {w_min}" if sign > 0 else
                               f"{NAMES[metric]} at width {w_min} − at width {w_max}",
                               detail="; ".join(f"seed {s}: {sig(a[s], 4)} -> {sig(b[s], 4)}" for s in seeds))

    conditions = [change("probe_accuracy", "rises"), change("fisher_ratio", "rises"), change("mse", "falls"),
                  _merge_condition(pre, by, seeds, w_min)]
    return Verdict("C2-v1", "Embeddings collapse (first rule: end points)", C2_RULE_V1, conditions,
                   _c2_numbers(by, w_min, w_max), statement=C2_CLAIM, seeds=seeds, role="superseded")


# --- C3: codebook-size scaling on CIFAR-10 --------------------------------------------

C3_CLAIM = (
    "“performance improvement as the number of tokens increases, surpassing the baseline by leveraging the "
    "benefits of increasing codebook size” (abstract)."
)

C3B_CLAIM = (
    "The study's stronger reading of the same sentence: with a codebook initialised from an untrained "
    "encoder, a bigger codebook stops paying off."
)

LARGE_K = 512

C3A_RULE = (
    f"At every K ≥ {LARGE_K}, in every seed: pretrain's perplexity and usage exceed baseline's and its test "
    f"MSE is lower. Over K ≥ {LARGE_K}: pretrain's seed-mean MSE falls from each K to the next, and "
    "pretrain's lead over baseline, 1 − MSE(pretrain) / MSE(baseline) of the seed means, grows from each K "
    "to the next."
)

C3B_RULE = (
    f"Baseline stops improving as K grows: its seed-mean test MSE at the largest K is less than 2% below its "
    f"seed-mean MSE at K = {LARGE_K}."
)

C3_RULE_V1 = (
    f"At every K ≥ {LARGE_K}, in every seed: pretrain's perplexity and usage exceed baseline's and its "
    f"test MSE is lower. And over K ≥ {LARGE_K}, pretrain's seed-mean MSE falls from each K to the next, "
    "while baseline's stops improving: its seed-mean MSE at the largest K is less than 2% below "
    f"its MSE at K = {LARGE_K}."
)


def _large(df: pd.DataFrame):
    return df[df.codebook_size >= LARGE_K]


def _no_large_k(claim, title, rule, df, statement, role="claim") -> Verdict:
    ks = sorted(df.codebook_size.unique().tolist())
    return Verdict(claim, title, rule, [Condition(f"the sweep reaches K ≥ {LARGE_K}", False,
                                                  f"codebook sizes run: {ks}")], {},
                   statement=statement, seeds=sorted(df.seed.unique().tolist()), role=role)


def _beats(large: pd.DataFrame, metric: str, better: str) -> Condition:
    """Pretrain better than baseline at every K >= LARGE_K, per seed: the smallest gap over K."""
    sign = 1 if better == "higher" else -1

    def statistic(t: pd.DataFrame) -> float:
        wide = t.pivot_table(index="codebook_size", columns="regime", values=metric)
        return float((sign * (wide["pretrain"] - wide["baseline"])).min())

    return rules.condition(f"pretrain's {NAMES[metric]} is {better} at every K ≥ {LARGE_K} in every seed", large,
                           statistic, ">", 0, what=f"smallest {'pretrain − baseline' if sign > 0 else 'baseline − pretrain'}"
                           f" {NAMES[metric]} over K", detail=per_seed_pairs(large, metric, "codebook_size")
                           if large.seed.nunique() == 1 else "; ".join(
                               f"K={k} seed {s}: baseline {sig(row['baseline'], 4)} vs pretrain {sig(row['pretrain'], 4)}"
                               for (k, s), row in large.pivot_table(index=["codebook_size", "seed"], columns="regime",
                                                                    values=metric).iterrows()))


def pretrain_mse(t: pd.DataFrame) -> pd.Series:
    return seed_means(t, "codebook_size", "mse")["pretrain"]


def lead(t: pd.DataFrame) -> pd.Series:
    """Pretrain's lead over baseline per K: 1 − MSE(pretrain) / MSE(baseline) of the seed means."""
    mse = seed_means(t, "codebook_size", "mse")
    return 1 - mse["pretrain"] / mse["baseline"]


def baseline_gain(t: pd.DataFrame) -> float:
    """How much lower baseline's seed-mean MSE is at the largest K than at the smallest
    (of the K >= LARGE_K given): 1 − MSE(largest) / MSE(smallest); NaN with one K."""
    b = seed_means(t, "codebook_size", "mse")["baseline"]
    return float(1 - b.iloc[-1] / b.iloc[0]) if len(b) > 1 else float("nan")


def _pretrain_falls(large: pd.DataFrame, mse: pd.DataFrame) -> Condition:
    return rules.condition(f"pretrain's MSE falls from each K ≥ {LARGE_K} to the next", large,
                           lambda t: float(pretrain_mse(t).diff().max()) if len(mse) > 1 else float("nan"), "<", 0,
                           scope="all seeds", what="largest rise of pretrain's seed-mean MSE from one K to the next",
                           detail=", ".join(f"K={k}: {sig(v, 4)}" for k, v in mse["pretrain"].items()))


def _lead_grows(large: pd.DataFrame) -> Condition:
    shown = lead(large)
    return rules.condition(f"pretrain's lead over baseline grows from each K ≥ {LARGE_K} to the next", large,
                           lambda t: float(lead(t).diff().min()) if len(shown) > 1 else float("nan"), ">", 0,
                           scope="all seeds", what="smallest growth of the lead from one K to the next",
                           detail=", ".join(f"K={k}: {v:.1%}" for k, v in shown.items()))


def _baseline_flat(large: pd.DataFrame, mse: pd.DataFrame) -> tuple[Condition, float]:
    ks = mse.index.tolist()
    gain = baseline_gain(large)
    detail = (f"{gain:.1%} lower; " if len(ks) > 1 else f"only one K ≥ {LARGE_K} in the sweep; ") + \
        ", ".join(f"K={k}: {sig(v, 4)}" for k, v in mse["baseline"].items())
    return rules.condition(f"baseline's MSE stops improving: less than 2% lower at K={ks[-1]} than at K={ks[0]}",
                           large, baseline_gain, "<", 0.02, scope="all seeds",
                           what=f"baseline's MSE gain from K={ks[0]} to K={ks[-1]}", detail=detail), gain


def _c3_numbers(df: pd.DataFrame, mse: pd.DataFrame) -> dict:
    k_max = mse.index[-1]
    at_max = df[df.codebook_size == k_max].groupby("regime")[["perplexity", "usage", "mse", "dead_tokens"]].mean()
    gain = 1 - mse["pretrain"] / mse["baseline"]
    return {"k_max": int(k_max),
            "baseline_mse_gain": float(1 - mse["baseline"].iloc[-1] / mse["baseline"].iloc[0]),
            "pretrain_mse_gain": float(1 - mse["pretrain"].iloc[-1] / mse["pretrain"].iloc[0]),
            "lead_at_512": float(gain.iloc[0]), "lead_at_kmax": float(gain.iloc[-1]),
            **{f"{m}_{r}": float(at_max.loc[r, m]) for m in at_max.columns for r in at_max.index}}


def check_cifar10_scaling(df: pd.DataFrame) -> Verdict:
    """C3a, the paper's claim, on a table with columns regime, seed, codebook_size,
    perplexity, usage, mse, dead_tokens (one row per run)."""
    title = "Pretraining beats baseline, more so as K grows (CIFAR-10)"
    large = _large(df)
    if large.empty:
        return _no_large_k("C3a", title, C3A_RULE, df, C3_CLAIM)
    mse = seed_means(large, "codebook_size", "mse")
    conditions = [_beats(large, "perplexity", "higher"), _beats(large, "usage", "higher"),
                  _beats(large, "mse", "lower"), _pretrain_falls(large, mse), _lead_grows(large)]
    numbers = _c3_numbers(df, mse)
    headline = (f"At K = {numbers['k_max']}, pretrain's test MSE is {pct(numbers['lead_at_kmax'])} below "
                f"baseline's (at K = {LARGE_K}: {pct(numbers['lead_at_512'])}).")
    return Verdict("C3a", title, C3A_RULE, conditions, numbers, statement=C3_CLAIM, headline=headline,
                   seeds=sorted(df.seed.unique().tolist()))


def check_baseline_stops_improving(df: pd.DataFrame) -> Verdict:
    """C3b, the study's stronger reading (the first version's 2% condition)."""
    title = "Baseline stops improving as K grows (CIFAR-10; the study's reading)"
    large = _large(df)
    if large.empty:
        return _no_large_k("C3b", title, C3B_RULE, df, C3B_CLAIM)
    mse = seed_means(large, "codebook_size", "mse")
    condition, gain = _baseline_flat(large, mse)
    numbers = _c3_numbers(df, mse)
    headline = (f"Baseline's test MSE falls {pct(gain)} from K = {LARGE_K} to K = {numbers['k_max']} "
                f"(pretrain's: {pct(numbers['pretrain_mse_gain'])})." if len(mse) > 1 else
                f"Not judged: the sweep has only one K ≥ {LARGE_K}.")
    return Verdict("C3b", title, C3B_RULE, [condition], numbers, statement=C3B_CLAIM, headline=headline,
                   seeds=sorted(df.seed.unique().tolist()))


def check_cifar10_scaling_v1(df: pd.DataFrame) -> Verdict:
    """C3's first rule (C3a's first four conditions and C3b's in one verdict), kept for
    the rule log."""
    title = "Codebook-size scaling on CIFAR-10 (first rule)"
    large = _large(df)
    if large.empty:
        return _no_large_k("C3-v1", title, C3_RULE_V1, df, C3_CLAIM, role="superseded")
    mse = seed_means(large, "codebook_size", "mse")
    conditions = [_beats(large, "perplexity", "higher"), _beats(large, "usage", "higher"),
                  _beats(large, "mse", "lower"), _pretrain_falls(large, mse), _baseline_flat(large, mse)[0]]
    return Verdict("C3-v1", title, C3_RULE_V1, conditions, _c3_numbers(df, mse), statement=C3_CLAIM,
                   seeds=sorted(df.seed.unique().tolist()), role="superseded")


@dataclass
class RuleChange:
    date: str
    old: str       # the superseded verdict's claim id
    new: list      # the claim ids that replace it
    why: str


RULE_CHANGES = [
    RuleChange("2026-11-30", "C3-v1", ["C3a", "C3b"],
               "The first rule joined the paper's claim (pretraining wins at large K, more so as K grows) with the "
               "study's own, stronger reading (baseline stops improving: its MSE less than 2% lower at the largest "
               "K than at K = 512), so one verdict could not say which part failed. The paper's abstract claims "
               "“performance improvement as the number of tokens increases, surpassing the baseline”: C3a tests "
               "that, with the condition that pretrain's lead grows with K added, as the abstract's "
               "“leveraging the benefits of increasing codebook size” reads; C3b keeps the 2% condition "
               "unchanged as a separate verdict."),
    RuleChange("2026-11-30", "C2-v1", ["C2"],
               "The first rule compared only the smallest and the largest width; at the quick defaults the "
               "classes merge only at width 2, a cliff that two end points cannot tell from a trend. The new rule "
               "asks for a rank correlation of at least 0.7 over every width, in every seed (the merge condition "
               "is unchanged)."),
]


# --- R3: what could explain C3b (beyond the paper; chapter cifar10_robustness) ---------

R3_STATEMENT = (
    "Baseline's test MSE keeps falling as K grows whatever the setting: none of the choices the paper leaves "
    "open that were tried (a longer schedule, a wider latent, as many quantized steps in pretrain as in "
    "baseline, more encoder outputs for the K-means) explains why C3b does not hold at C3's setting."
)

R3_RULE = (
    "Each setting's C3a and C3b are judged by C3's own checks on that setting's runs alone (where a setting's "
    "pretrain runs are paired with another setting's baseline runs, on that pair). The finding holds when C3b "
    f"does not hold under any setting: in each, baseline's seed-mean test MSE at the largest K is at least 2% "
    f"below its MSE at K = {LARGE_K}. A setting under which C3b holds is a candidate explanation, and then the "
    "finding does not hold. C3a's outcome is reported beside each setting, not judged."
)


def setting_tables(df: pd.DataFrame, baseline_from: dict | None = None) -> dict[str, pd.DataFrame]:
    """One run table per value of the ``setting`` column, in order of appearance.
    ``baseline_from`` maps a setting to another whose baseline runs replace its own, its
    pretrain runs paired with them: a swept variant sets both regimes alike, so a
    comparison that needs them trained differently is paired here, where it is named."""
    names = list(dict.fromkeys(df["setting"]))
    pairs = dict(baseline_from or {})
    for name in [n for pair in pairs.items() for n in pair]:
        if name not in names:
            raise ValueError(f"baseline_from={pairs!r} names setting {name!r}, which was not run; settings run: "
                             f"{names}")
    tables = {}
    for name in names:
        own = df[df["setting"] == name]
        if name in pairs:
            own = pd.concat([own[own.regime == "pretrain"],
                             df[(df["setting"] == pairs[name]) & (df.regime == "baseline")]])
        tables[name] = own.reset_index(drop=True)
    return tables


def c3_outcome(table: pd.DataFrame) -> dict:
    """C3a and C3b (C3's own checks) on one table of runs, as one row: outcomes and the
    numbers they turn on (NaN where the runs do not reach K >= LARGE_K)."""
    with rules.outcomes_only():  # outcomes, many times over: no margins or fragility needed here
        a, b = check_cifar10_scaling(table), check_baseline_stops_improving(table)
    large = sorted(k for k in table.codebook_size.unique() if k >= LARGE_K)
    return {"C3a": a.outcome, "C3a conditions held": f"{sum(c.holds for c in a.conditions)} of {len(a.conditions)}",
            "C3b": b.outcome, "k_low": int(large[0]) if large else None, "k_max": int(large[-1]) if large else None,
            **{key: float(b.numbers.get(key, float("nan")))
               for key in ("baseline_mse_gain", "pretrain_mse_gain", "lead_at_512", "lead_at_kmax")}}


def c3_by_setting(tables: dict) -> pd.DataFrame:
    """C3a and C3b of each setting in each seed alone, then (with more than one seed) on
    the seed means, as the verdicts judge them: one row each."""
    rows = []
    for name, table in tables.items():
        seeds = sorted(table.seed.unique().tolist())
        parts = [(str(s), table[table.seed == s]) for s in seeds]
        if len(seeds) > 1:
            parts.append((f"{', '.join(map(str, seeds))} (means)", table))
        rows += [{"setting": name, "seed": label, **c3_outcome(part)} for label, part in parts]
    return pd.DataFrame(rows)


def _name_key(name: str) -> str:
    """A setting's name as part of a glue key: letters, digits and underscores."""
    return "".join(c if c.isalnum() else "_" for c in name)


def check_c3b_explanations(tables: dict, claim: str = "R3", title: str = "What could explain C3b") -> Verdict:
    """R3 on ``{setting: run table}`` (:func:`setting_tables`): one condition per setting,
    that C3b was judged there (K >= LARGE_K reached, more than one K) and does not hold."""
    conditions, numbers, explained = [], {}, []
    for name, table in tables.items():
        r = c3_outcome(table)
        judged = r["k_max"] is not None and r["k_max"] > r["k_low"]
        if judged and r["C3b"] == "holds":
            explained.append((name, r))
        detail = (f"baseline's MSE {r['baseline_mse_gain']:.1%} lower at K={r['k_max']} than at K={r['k_low']} "
                  f"(pretrain's {r['pretrain_mse_gain']:.1%}); pretrain's lead {r['lead_at_512']:.1%} at "
                  f"K={r['k_low']}, {r['lead_at_kmax']:.1%} at K={r['k_max']}; C3a {r['C3a']} "
                  f"({r['C3a conditions held']} conditions)" if judged else
                  f"not judged: the runs reach K ≥ {LARGE_K} at fewer than two codebook sizes")
        large = _large(table)
        conditions.append(rules.condition(f"{name}: C3b does not hold (baseline's MSE still falls with K)", large,
                                          baseline_gain if judged else (lambda t: float("nan")), ">=", 0.02,
                                          scope="all seeds", what="baseline's MSE gain from the smallest to the "
                                          f"largest K ≥ {LARGE_K}", detail=detail) if judged else
                          Condition(f"{name}: C3b does not hold (baseline's MSE still falls with K)", False, detail))
        key = _name_key(name)
        numbers.update({f"{key}_{m}": r[m] for m in ("baseline_mse_gain", "pretrain_mse_gain", "lead_at_512",
                                                      "lead_at_kmax")})
        numbers.update({f"{key}_c3a": r["C3a"], f"{key}_c3b": r["C3b"]})
    gains = [numbers[f"{_name_key(n)}_baseline_mse_gain"] for n in tables]
    if explained:
        headline = ("C3b holds under " + "; ".join(
            f"{n} (baseline's MSE {pct(r['baseline_mse_gain'])} lower at K = {r['k_max']} than at K = {r['k_low']})"
            for n, r in explained) + f", of {len(tables)} settings.")
    else:
        headline = (f"Under all {len(tables)} settings baseline's test MSE still falls from K = {LARGE_K} to the "
                    f"largest K, by {pct(min(gains))} to {pct(max(gains))}: C3b fails in each.")
    seeds = sorted({s for t in tables.values() for s in t.seed.unique().tolist()})
    return Verdict(claim, title, R3_RULE, conditions, numbers, statement=R3_STATEMENT, headline=headline,
                   seeds=seeds, role="finding")


# --- each paper chapter's verdicts from its run table: what its notebook publishes and what
# the tests re-judge a record's stored run table with ---------------------------------------

def judge_tokens_collapse(df: pd.DataFrame) -> list[Verdict]:
    return [check_tokens_collapse(df).judged_on(df)]


def judge_embeddings_collapse(df: pd.DataFrame) -> list[Verdict]:
    """C2 on the standard mixture, C2h on the harder one, C2-v1 (the rule log's) on the
    standard one; a table without a ``mixture`` column is the standard mixture."""
    standard = df[df.mixture == "standard"] if "mixture" in df else df
    verdicts = [check_embeddings_collapse(standard).judged_on(standard)]
    if "mixture" in df and (df.mixture == "harder").any():
        hard = df[df.mixture == "harder"]
        verdicts.append(check_embeddings_collapse(hard, "C2h", "Embeddings collapse, on a harder mixture")
                        .judged_on(hard))
    return verdicts + [check_embeddings_collapse_v1(standard).judged_on(standard)]


def judge_cifar10_scaling(df: pd.DataFrame) -> list[Verdict]:
    large = _large(df)
    return [check_cifar10_scaling(df).judged_on(large), check_baseline_stops_improving(df).judged_on(large),
            check_cifar10_scaling_v1(df).judged_on(large)]


JUDGES = {"tokens_collapse": judge_tokens_collapse, "embeddings_collapse": judge_embeddings_collapse,
          "cifar10_scaling": judge_cifar10_scaling}
