"""Whether a run had converged by its last step, read from its recorded training curves
(the book's *Protocol* page, "Convergence"; the rule was fixed on 2026-12-07, before the
long-schedule records were run).

A run's curves hold evaluation MSE, usage and perplexity at ``curve_points`` moments
(:func:`vqstudy.training.curve_steps`), on the same evaluation examples each time, so a
change between two points is the model's, not sampling noise. The rule compares the last
point with the point a quarter of the schedule earlier (the last point at or before that
step, where none falls on it exactly: the window is then a little longer, never shorter):

- evaluation MSE changed by less than ``MSE_TOLERANCE`` (1%) of its value there, and
- usage and perplexity each changed by less than ``CODEBOOK_TOLERANCE`` (2%).

Why these numbers: the verdicts turn on MSE gaps of a few percent (C3b's threshold is 2%,
pretrain's lead at K = 512 is tens of percent at the quick schedule), so a run whose MSE
still moves 1% a quarter-schedule could still move a verdict with more training; usage
and perplexity are counts of tokens and move in coarser steps, hence 2%. Both directions
count: a run whose MSE rises by more than 1% is not at rest either.

A run whose quantization starts after that earlier point, or that recorded no curves,
cannot be judged: :func:`run_convergence` says so, and it counts as not converged.
"""

import math

import pandas as pd

MSE_TOLERANCE = 0.01
CODEBOOK_TOLERANCE = 0.02
LAST_SHARE = 0.25   # the part of the schedule whose change is measured
METRICS = {"mse": MSE_TOLERANCE, "usage": CODEBOOK_TOLERANCE, "perplexity": CODEBOOK_TOLERANCE}

RULE = (f"A run has converged when, from the point {LAST_SHARE:.0%} of its steps before the end to its last "
        f"step, its evaluation MSE changed by less than {MSE_TOLERANCE:.0%} and its usage and perplexity by less "
        f"than {CODEBOOK_TOLERANCE:.0%} each (relative changes, either direction), on its recorded training "
        "curves.")


def run_convergence(curves: dict | pd.DataFrame, total_steps: int) -> dict:
    """``{"converged": bool | None, "from_step", "to_step", "mse_change", "usage_change",
    "perplexity_change", "why"}`` for one run's curves (as ``train`` returns them).
    Changes are relative, ``last / earlier - 1``; ``converged`` is ``None`` when the
    curves cannot tell (no curves, or quantization started too late)."""
    c = pd.DataFrame(curves)
    if c.empty:
        return {"converged": None, "why": "no training curves recorded"}
    vq = c[(c.phase == "vq")].sort_values("step")
    vq = vq[vq.mse.map(math.isfinite)]
    start = total_steps * (1 - LAST_SHARE)
    earlier = vq[vq.step <= start + 1e-9]
    if vq.empty or earlier.empty:
        return {"converged": None, "why": f"no quantized curve point at or before step {start:g}"}
    a, b = earlier.iloc[-1], vq.iloc[-1]
    if b.step <= a.step:
        return {"converged": None, "why": f"no quantized curve point after step {a.step}"}
    out = {"from_step": int(a.step), "to_step": int(b.step)}
    for name in METRICS:
        out[f"{name}_change"] = float(b[name] / a[name] - 1) if a[name] else float("inf")
    moving = [f"{name} {out[f'{name}_change']:+.1%}" for name, tol in METRICS.items()
              if not abs(out[f"{name}_change"]) < tol]
    out["converged"] = not moving
    out["why"] = ("still moving: " + ", ".join(moving)) if moving else "at rest"
    return out


def converged(curves: dict | pd.DataFrame, total_steps: int) -> bool:
    """Whether the run converged by the rule (a run the curves cannot judge did not)."""
    return bool(run_convergence(curves, total_steps)["converged"])
