"""Three settings of the fixes chapter (``notebooks/vq_fixes.ipynb``) examined with
numbers, because a reader questioned them: LFQ's evaluation MSE that rises during
training, the rotation trick's few tokens in use on CIFAR-10, and the dead-code reset's
threshold of 2 uses per batch where C1's data gives a token about 0.5.

Why a module of its own: the chapter must compute every number it states from its runs,
and the training code (``training.py`` and what it imports) must not change, since any
edit to it re-keys the run cache. These functions only read what a run stored (its
``curves``, ``metrics``, ``init_metrics``, ``final`` tokens and counts) or replay the
library's reset rule on stored embeddings; nothing here is imported by the training code.

- :func:`curve_summary`, :func:`run_rows`: where a run's evaluation MSE and codebook use
  went during quantization (start, lowest, end), and how the spread of the encoder's
  outputs changed (``embedding_variance`` at the end over at the codebook's start).
- :func:`uses_per_batch`, :func:`threshold_relative`, :func:`most_tokens_above`,
  :func:`share_below`: the dead-code threshold against the uses a token gets per batch.
- :func:`replay_resets`: the library's ``VectorQuantize``, built with the chapter's
  ``dead_code`` arguments, run in training mode on batches of a run's stored embeddings
  (the encoder frozen) from the run's final tokens, counting the tokens it replaces each step.
"""

import math

import numpy as np
import pandas as pd
import torch


def curve_summary(curves: dict) -> dict:
    """The quantized part of one run's training curves (``phase == "vq"``): the step
    where quantization starts and the MSE and usage there, the next point's step, usage
    and dead tokens, the lowest MSE and its step, the highest MSE after it, the lowest usage and its
    step, and the MSE, usage and dead tokens at the end. NaN where there are no points."""
    c = pd.DataFrame(curves)
    c = c[c.phase == "vq"].dropna(subset=["mse"]).sort_values("step", kind="stable").reset_index(drop=True)
    if c.empty:
        return {k: math.nan for k in ("start_step", "mse_start", "usage_start", "next_step", "usage_next", "dead_next",
                                      "mse_low", "mse_low_step", "mse_high_after_low", "usage_low",
                                      "usage_low_step", "mse_end", "usage_end", "dead_end")}
    low = int(c.mse.idxmin())
    used_low = int(c.usage.idxmin())
    nxt = c.iloc[1] if len(c) > 1 else c.iloc[0]
    return {
        "start_step": int(c.step.iloc[0]), "mse_start": float(c.mse.iloc[0]), "usage_start": float(c.usage.iloc[0]),
        "next_step": int(nxt.step), "usage_next": float(nxt.usage), "dead_next": float(nxt.dead_tokens),
        "mse_low": float(c.mse.iloc[low]), "mse_low_step": int(c.step.iloc[low]),
        "mse_high_after_low": float(c.mse.iloc[low:].max()),
        "usage_low": float(c.usage.iloc[used_low]), "usage_low_step": int(c.step.iloc[used_low]),
        "mse_end": float(c.mse.iloc[-1]), "usage_end": float(c.usage.iloc[-1]),
        "dead_end": float(c.dead_tokens.iloc[-1]),
    }


def run_rows(points: list[dict], results: list[dict]) -> pd.DataFrame:
    """One row per run: its swept parameters (``points``), data set, K, D, seed, quantizer
    and regime, :func:`curve_summary` of its curves, and from its evaluations over the
    whole evaluation set: usage and codebook spread when quantization started (``_init``)
    and at the end, MSE at the end, and ``variance_growth``, the variance of the
    encoder's outputs at the end over that when the codebook started."""
    rows = []
    for point, r in zip(points, results):
        c, m, i = r["config"], r["metrics"], r["init_metrics"]
        rows.append({**point, "data": c["data"], "K": c["codebook_size"], "D": c["latent_dim"], "seed": c["seed"],
                     "quantizer": c["quantizer"], "regime": c["regime"],
                     "usage_init": i["usage"], "usage": m["usage"], "mse": m["mse"],
                     "spread_init": i["codebook_spread"], "spread": m["codebook_spread"],
                     "variance_growth": m["embedding_variance"] / i["embedding_variance"],
                     **curve_summary(r["curves"])})
    return pd.DataFrame(rows)


def uses_per_batch(latents_per_batch: int, num_tokens: int) -> float:
    """How often the average token is chosen in one batch: latents per batch / K."""
    return latents_per_batch / num_tokens


def threshold_relative(threshold: float, latents_per_batch: int, num_tokens: int) -> float:
    """The dead-code threshold (an EMA count of uses per batch) in units of the average
    token's uses per batch: 4 means a token must be chosen four times as often as the
    average one to stay."""
    return threshold / uses_per_batch(latents_per_batch, num_tokens)


def most_tokens_above(threshold: float, latents_per_batch: int, num_tokens: int) -> int:
    """At most how many tokens can be chosen at least ``threshold`` times per batch on
    average: their uses add up to the batch's latents, so no more than
    latents / threshold of them (and no more than K). A token whose EMA count settles at
    its average uses per batch stays above the threshold only if it is one of these."""
    return min(num_tokens, math.floor(latents_per_batch / threshold))


def share_below(counts, latents_per_batch: int, threshold: float) -> float:
    """The share of tokens whose use on the evaluation set, rescaled to one batch
    (``counts / counts.sum() * latents_per_batch``), is below ``threshold``: the tokens
    the reset would replace if their EMA counts matched how often they are chosen."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    per_batch = counts / counts.sum() * latents_per_batch
    return float((per_batch < threshold).double().mean())


@torch.no_grad()
def replay_resets(embeddings, tokens, counts, latents_per_batch: int, decay: float = 0.99, beta: float = 0.25,
                  steps: int = 100, seed: int = 0, quantizer: str = "dead_code",
                  dead_code_threshold: float | None = None) -> dict:
    """Replay the library's dead-code reset on stored embeddings.

    Builds ``quantizer`` as the chapter does (``vqstudy.adapters.build``: the library's
    ``VectorQuantize`` with the chapter's arguments), sets its codebook to ``tokens`` with
    EMA counts ``counts`` rescaled to one batch (as ``init_codebook`` does), and runs it
    ``steps`` times in training mode on batches of ``latents_per_batch`` rows drawn from
    ``embeddings`` (K x D tokens, N x D embeddings: the encoder frozen). Each step the
    module updates its EMA, then replaces every token whose EMA count fell below the
    threshold (``dead_code_threshold``, the runs' setting; None: the Config default), at
    most one per latent of the batch (the rest wait a step).

    Returns per step ``expired`` (tokens below the threshold when the module checked) and
    ``replaced`` (those it replaced), ``replaced_once`` (the share of tokens replaced at
    least once), ``threshold`` and ``usage`` (the share of tokens nearest to at least one
    embedding at the end)."""
    from vqstudy import adapters

    embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
    tokens = torch.as_tensor(tokens, dtype=torch.float32)
    k, d = tokens.shape
    counts = torch.as_tensor(counts, dtype=torch.float32)
    counts = counts * (latents_per_batch / counts.sum())
    expired, replaced, ever = [], [], torch.zeros(k, dtype=torch.bool)
    with torch.random.fork_rng():  # building the module and its resets draw from torch's global generator
        torch.manual_seed(seed)
        threshold = adapters.DEAD_CODE_DEFAULT if dead_code_threshold is None else dead_code_threshold
        vq = adapters.build(quantizer, k, d, decay, beta, dead_code_threshold=threshold).train()
        book = vq.module._codebook
        book.embed.data[0].copy_(tokens)
        book.embed_avg.data[0].copy_(tokens * counts[:, None])
        book.cluster_size.data[0].copy_(counts)
        book.initted.data.fill_(True)
        original = book.replace

        def counting(batch_samples, batch_mask, seq_mask=None):  # the module calls it when a token expired
            n_dead, n_samples = int(batch_mask.sum()), batch_samples.shape[-2]
            expired[-1], replaced[-1] = n_dead, min(n_dead, n_samples)
            before = book.embed.data[0].clone()
            original(batch_samples, batch_mask, seq_mask)
            ever.logical_or_((book.embed.data[0] != before).any(-1))

        book.replace = counting  # this module only, built here
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            expired.append(0)
            replaced.append(0)
            rows = (torch.randperm(len(embeddings), generator=generator)[:latents_per_batch]
                    if latents_per_batch <= len(embeddings)
                    else torch.randint(len(embeddings), (latents_per_batch,), generator=generator))
            vq(embeddings[rows])
    nearest = torch.cdist(embeddings, book.embed.data[0]).argmin(1)
    return {"expired": expired, "replaced": replaced, "replaced_once": float(ever.double().mean()),
            "threshold": float(book.threshold_ema_dead_code),
            "usage": float(torch.bincount(nearest, minlength=k).gt(0).double().mean())}


def factor(x: float) -> str:
    """A ratio as a factor for the prose: "×0.12" (two significant digits below 1),
    "×1.4" (one decimal below 10), "×21", "×2100" (whole from 10 on); from 10⁵ on with a
    power of ten, "×2.9×10¹²"; "—" when not a positive finite number."""
    if not np.isfinite(x) or x <= 0:
        return "—"
    if x >= 1e5:
        exponent = math.floor(math.log10(x))
        mantissa = x / 10 ** exponent
        if round(mantissa, 1) >= 10:  # 9.96×10⁵ rounds to 10.0: one power up
            mantissa, exponent = mantissa / 10, exponent + 1
        return f"×{mantissa:.1f}×10" + str(exponent).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    if x < 1:
        return "×" + f"{x:#.2g}".rstrip(".")
    return "×" + (f"{x:.1f}" if x < 10 else f"{x:.0f}")
