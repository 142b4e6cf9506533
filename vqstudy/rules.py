"""One form for every condition of every rule: a statistic, a comparison, a threshold
(the book's *Protocol* page, "How sure a verdict is").

A condition computes a **statistic** from a run table (one row per run, a ``seed``
column) and compares it with a **threshold**. Its **scope** says over what:

- ``"every seed"``: the statistic of each seed's runs alone, and the condition holds when
  every seed's value passes; the deciding value is the worst seed's;
- ``"all seeds"``: one statistic of all the runs together (of the seed means, usually).

Besides holds / does not hold, :func:`condition` measures how sure that is:

- **margin**: how far the deciding value is from the threshold, in the statistic's own
  units, positive on the side where the condition holds (for a strict comparison, 0 fails);
- **spread**: the standard deviation over seeds of the statistic computed on each seed
  alone, and the margin in those units (``margin_in_spreads``);
- **leave one seed out**: the seeds whose removal flips the condition;
- **floating point**: whether the condition flips when every metric of every run moves
  by up to the run-to-run spread measured when only the floating-point path changes
  (``benchmarks/fp_spread.py``, committed as ``records/fp-spread-*/fp_spread.json``; the
  typical run's, :func:`typical_spread`): ``FP_DRAWS`` random draws, each metric scaled by
  ``1 + spread * u``, ``u`` uniform in [-1, 1], per run.

A condition is **fragile** when it flips in either test; a verdict is fragile when its
outcome could flip that way (:func:`verdict_fragile`). A ranking or an argmin reports the
results within noise of the best as tied (:func:`tied_with_best`).

Pure functions of data: this module imports nothing from vqstudy.
"""

import json
import math
import operator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
SYMBOLS = {">=": "≥", ">": ">", "<=": "≤", "<": "<"}
SCOPES = ("every seed", "all seeds")
FP_DRAWS = 32
_MEASURE = [True]   # False inside outcomes_only(): holds / does not hold only
RECORDS = Path(__file__).resolve().parent.parent / "records"


@dataclass
class Condition:
    name: str
    holds: bool
    detail: str
    statistic: str = ""            # what is compared, in words, with its unit
    comparison: str = ""           # one of COMPARISONS
    threshold: float | None = None
    scope: str = ""                # one of SCOPES
    values: dict = field(default_factory=dict)   # seed -> value ("every seed"), or {"all": value}
    deciding: float | None = None  # the worst seed's value, or the one value
    margin: float | None = None    # deciding value's distance from the threshold, > 0 where it holds
    spread: float | None = None    # standard deviation over seeds of the statistic, each seed alone
    margin_in_spreads: float | None = None
    flips_without_seed: list = field(default_factory=list)  # seeds whose leaving out flips it
    flips_under_fp: bool | None = None   # None: no floating-point spread measured
    fp_range: float | None = None  # the largest move of the deciding value under those draws

    @property
    def fragile(self) -> bool:
        return bool(self.flips_without_seed) or bool(self.flips_under_fp)

    def margin_text(self) -> str:
        """``margin 0.07 (1.2 seed spreads); fragile: flips without seed 2``."""
        if self.margin is None or not math.isfinite(self.margin):
            return ""
        text = f"margin {number(self.margin)}"
        if self.margin_in_spreads is not None and math.isfinite(self.margin_in_spreads):
            text += f" ({number(self.margin_in_spreads)} seed spreads)"
        why = []
        if self.flips_without_seed:
            why.append("flips without seed " + ", ".join(map(str, self.flips_without_seed)))
        if self.flips_under_fp:
            why.append(f"flips under floating-point noise (moves up to {number(self.fp_range)})")
        return text + (f"; **fragile**: {'; '.join(why)}" if why else "")


def number(x: float) -> str:
    """3 significant digits, no exponent for everyday sizes."""
    if x is None or not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 or x == 0 else f"{x:.2e}"


def margin_of(value: float, comparison: str, threshold: float) -> float:
    """Signed distance of ``value`` from ``threshold``, positive on the passing side."""
    return value - threshold if comparison in (">=", ">") else threshold - value


def passes(value: float, comparison: str, threshold: float) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and \
        bool(COMPARISONS[comparison](value, threshold))


# --- the run-to-run spread from floating point ----------------------------------------------

def fp_spread(root: Path | None = None) -> dict:
    """Relative spread per metric from the newest ``records/fp-spread-*/fp_spread.json``
    (``{}`` when none is committed: then no condition is tested against it):
    :func:`typical_spread` of its runs."""
    found = sorted(Path(root or RECORDS).glob("fp-spread-*/fp_spread.json"))
    if not found:
        return {}
    return typical_spread(json.loads(found[-1].read_text()))


def typical_spread(measured: dict) -> dict:
    """Per metric, the median over the measured runs of each run's largest relative change
    under any change of the floating-point path.

    The median, not the largest: the largest changes come from a few runs whose training is
    chaotic (measured: C2h at width 256, silhouette 56% and perplexity 21% apart under
    another CPU's kernels; C1's collapsed baseline at K = 1024, usage 15% apart), and scaled
    onto every run they would call fragile conditions whose runs do not move that way. The
    Protocol page shows the largest beside the typical."""
    per_run = {}
    for row in measured["runs"]:
        for metric, change in row["change"].items():
            per_run.setdefault(metric, {}).setdefault(row["run"], 0.0)
            per_run[metric][row["run"]] = max(per_run[metric][row["run"]], float(change))
    return {metric: float(np.median(list(runs.values()))) for metric, runs in per_run.items()}


def fp_metric(column: str, spread: dict) -> str | None:
    """Which measured metric a run-table column is (``pooled_probe_accuracy`` is a probe
    accuracy, ``perplexity_share`` a perplexity), or None when it is not a metric."""
    for metric in spread:
        if column == metric or column.endswith("_" + metric):
            return metric
    if column.endswith("accuracy") and "probe_accuracy" in spread:
        return "probe_accuracy"
    if column.startswith("perplexity") and "perplexity" in spread:
        return "perplexity"
    return None


def perturbed_tables(table: pd.DataFrame, spread: dict, draws: int = FP_DRAWS, seed: int = 0):
    """``draws`` copies of ``table``, each metric column scaled by ``1 + spread * u`` per run."""
    columns = {c: spread[m] for c in table.columns
               if (m := fp_metric(c, spread)) and spread[m] > 0 and pd.api.types.is_float_dtype(table[c])}
    rng = np.random.default_rng(seed)
    for _ in range(draws if columns else 0):
        copy = table.copy()
        for c, s in columns.items():
            copy[c] = table[c] * (1 + s * rng.uniform(-1, 1, len(table)))
        yield copy


@contextmanager
def outcomes_only():
    """Inside, :func:`condition` computes holds / does not hold and the margin only: no
    leave-one-seed-out and no floating-point draws (for callers that need many outcomes,
    e.g. a table of verdicts per setting and seed)."""
    _MEASURE.append(False)
    try:
        yield
    finally:
        _MEASURE.pop()


# --- a condition ---------------------------------------------------------------------------

def seeds_of(table: pd.DataFrame) -> list:
    return sorted(table["seed"].unique().tolist())


def evaluate(table: pd.DataFrame, statistic: Callable, comparison: str, threshold: float,
             scope: str) -> tuple[bool, dict, float]:
    """(holds, values, deciding value) of the statistic on ``table``."""
    if scope == "every seed":
        values = {s: float(statistic(table[table["seed"] == s])) for s in seeds_of(table)}
        deciding = min(values.values(), key=lambda v: margin_of(v, comparison, threshold)
                       if math.isfinite(v) else -math.inf)
        holds = bool(values) and all(passes(v, comparison, threshold) for v in values.values())
    else:
        deciding = float(statistic(table))
        values, holds = {"all": deciding}, passes(deciding, comparison, threshold)
    return holds, values, deciding


def condition(name: str, table: pd.DataFrame, statistic: Callable[[pd.DataFrame], float], comparison: str,
              threshold: float, *, scope: str = "every seed", what: str = "", detail: str = "",
              spread: dict | None = None) -> Condition:
    """A condition of a rule: ``statistic`` (of a table of runs) ``comparison``
    ``threshold`` in ``scope``, with its margin, seed spread and fragility. ``what`` names
    the statistic and its unit; ``detail`` is shown beside the values (the numbers behind
    them); ``spread`` is the floating-point spread per metric (default: :func:`fp_spread`)."""
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison={comparison!r} is invalid: must be one of {list(COMPARISONS)}")
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} is invalid: must be one of {list(SCOPES)}")
    holds, values, deciding = evaluate(table, statistic, comparison, threshold, scope)
    seeds = seeds_of(table)
    margin = margin_of(deciding, comparison, threshold) if math.isfinite(deciding) else math.nan
    per_seed = values if scope == "every seed" else \
        {s: float(statistic(table[table["seed"] == s])) for s in seeds} if len(seeds) > 1 else {}
    finite = [v for v in per_seed.values() if math.isfinite(v)]
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    flips = []
    measure = _MEASURE[-1]
    if measure and len(seeds) > 1:
        for s in seeds:
            if scope == "every seed":
                rest = all(passes(v, comparison, threshold) for k, v in values.items() if k != s)
            else:
                rest = passes(float(statistic(table[table["seed"] != s])), comparison, threshold)
            if rest != holds:
                flips.append(s)
    spread = fp_spread() if spread is None else spread
    fp_flips, fp_range = None, None
    tables = list(perturbed_tables(table, spread)) if measure else []
    if tables:
        moved = [evaluate(t, statistic, comparison, threshold, scope) for t in tables]
        fp_flips = any(h != holds for h, _, _ in moved)
        ranges = [abs(d - deciding) for _, _, d in moved if math.isfinite(d) and math.isfinite(deciding)]
        fp_range = max(ranges) if ranges else math.nan
    shown = ", ".join(f"{'seed ' + str(k) if k != 'all' else 'value'} {number(v)}" for k, v in values.items())
    rule = f"{what or 'statistic'} {SYMBOLS[comparison]} {number(threshold)}" + \
        (" in every seed" if scope == "every seed" else "")
    return Condition(name, holds, (detail + "; " if detail else "") + f"{rule}: {shown}",
                     statistic=what, comparison=comparison, threshold=float(threshold), scope=scope, values=values,
                     deciding=deciding, margin=margin, spread=sd,
                     margin_in_spreads=margin / sd if sd and math.isfinite(sd) and math.isfinite(margin) else None,
                     flips_without_seed=flips, flips_under_fp=fp_flips, fp_range=fp_range)


def verdict_fragile(conditions: list[Condition]) -> list[Condition]:
    """The conditions that make a verdict fragile: for a verdict that holds, every fragile
    condition (any one flipping fails it); for one that does not, the failing conditions,
    when every one of them is fragile (all must flip for it to hold); else none."""
    failing = [c for c in conditions if not c.holds]
    if not failing:
        return [c for c in conditions if c.fragile]
    return failing if all(c.fragile for c in failing) else []


def seeds_to_settle(c: Condition, most: int = 5) -> int | None:
    """How many seeds would make the seed spread's standard error smaller than the margin:
    ``ceil((spread / margin)^2)``, None when margin or spread is unknown or zero."""
    if not c.margin or not c.spread or not math.isfinite(c.margin) or not math.isfinite(c.spread):
        return None
    return max(len(c.values), math.ceil((c.spread / abs(c.margin)) ** 2))


# --- ties ------------------------------------------------------------------------------------

def tied_with_best(table: pd.DataFrame, by: str, metric: str, lower: bool = True, spread: dict | None = None) -> dict:
    """The values of ``by`` whose seed-mean ``metric`` is within noise of the best one's.

    Within noise: the difference of seed means from the best is smaller than two standard
    errors of the per-seed (paired) differences, or than the floating-point spread of the
    metric (relative, :func:`fp_spread`) times the best value, whichever is larger. Returns
    ``{"best": value, "tied": [values, best first], "means": {value: mean}}``."""
    spread = fp_spread() if spread is None else spread
    wide = table.pivot_table(index="seed", columns=by, values=metric, aggfunc="mean")
    means = wide.mean()
    best = means.idxmin() if lower else means.idxmax()
    fp = spread.get(fp_metric(metric, spread) or "", 0.0) * abs(means[best])
    tied = []
    for value in means.index:
        diff = (wide[value] - wide[best]).dropna()
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
        if value == best or abs(means[value] - means[best]) <= max(2 * se, fp):  # equal means tie, noise or not
            tied.append(value)
    tied.sort(key=lambda v: (v != best, means[v] if lower else -means[v]))
    return {"best": best, "tied": tied, "means": means.to_dict()}
