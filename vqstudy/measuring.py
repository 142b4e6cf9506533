"""How codebook use is measured: per batch or over the whole evaluation set, and on how
many tokens (the *Measuring collapse* chapter, ``notebooks/measuring_collapse.ipynb``).

The study measures perplexity and usage over the whole evaluation set at once (the
book's *Protocol* page, "Metrics"). Most VQ training loops log them per batch instead:
the perplexity of the batch's token ids, exp(H) of their frequencies in that batch alone
(Sonnet's ``VectorQuantizer`` and the code that follows it). A batch of B ids can show
at most B distinct tokens, so its perplexity is at most B and its usage at most B / K,
whatever the codebook does on the whole set. This module computes both readings from a
run's stored final embeddings and tokens:

- :func:`assign`: each embedding's nearest token (:func:`vqstudy.quantizer.nearest_token`,
  the study's own search);
- :func:`per_batch` / :func:`batch_curve`: the mean over batches of B ids of each batch's
  perplexity and usage, the batches taken in order or after a seeded shuffle, for B from
  16 up to the whole set (:func:`batch_sizes`);
- :func:`whole_set` / :func:`first_n_curve`: perplexity and usage over the first N ids,
  N from K/8 up to all of them (:func:`token_sizes`);
- :func:`measure_run`: all of it for one stored run, and the run's whole-set numbers over
  every evaluation token from its stored token counts.

Token ids are integer arrays (numpy or torch) of values in ``0..K-1``. Pure functions of
data: this module imports numpy, pandas, torch, :mod:`vqstudy.quantizer` and
:mod:`vqstudy.metrics` only.
"""

import math

import numpy as np
import pandas as pd
import torch

from vqstudy import metrics, quantizer

SMALLEST_BATCH = 16          # the smallest batch of batch_curve
IN_ORDER, SHUFFLED = "in order", "shuffled"
MAX_CELLS = 1 << 22          # counts held at once by per_batch (rows x K)


def ids_of(ids, num_tokens: int) -> np.ndarray:
    """Token ids as a flat int64 numpy array, checked to lie in ``0..num_tokens-1``."""
    out = (ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)).reshape(-1)
    out = out.astype(np.int64, copy=False)
    if num_tokens < 1:
        raise ValueError(f"num_tokens={num_tokens} is invalid: must be a positive integer")
    if out.size and (out.min() < 0 or out.max() >= num_tokens):
        raise ValueError(f"token ids must be in 0..{num_tokens - 1} (num_tokens={num_tokens}), "
                         f"got ids from {int(out.min())} to {int(out.max())}")
    return out


def assign(embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The nearest token of every embedding (rows of ``embeddings``, (N, D)) among
    ``tokens`` (K, D): the study's own search, lowest index on a tie."""
    return quantizer.nearest_token(embeddings.reshape(-1, tokens.shape[1]).float().contiguous(),
                                   tokens.float().contiguous())


def entropy_rows(counts: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of a counts matrix (rows, K); 0 for an empty row."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(1)


def whole_set(ids, num_tokens: int) -> dict:
    """Perplexity (exp of the entropy of the ids' frequencies) and usage (the fraction of
    the ``num_tokens`` tokens that occur) over all of ``ids`` at once, as
    :mod:`vqstudy.metrics` computes them over a run's evaluation set."""
    counts = torch.from_numpy(np.bincount(ids_of(ids, num_tokens), minlength=num_tokens))
    return {"perplexity": metrics.perplexity(counts), "usage": metrics.usage(counts)}


def per_batch(ids, num_tokens: int, batch_size: int, shuffle_seed: int | None = None) -> dict:
    """The mean over batches of ``batch_size`` ids of each batch's perplexity and usage,
    as a training loop that logs them per batch would read them. The batches are
    consecutive ids (``shuffle_seed`` None) or consecutive after a permutation drawn with
    that seed; an incomplete last batch is left out; a ``batch_size`` of at least
    ``len(ids)`` is one batch, the whole set. Returns ``perplexity``, ``usage`` (means),
    ``perplexity_sd`` (the standard deviation over batches), ``batches`` and
    ``batch_tokens`` (the batch's size as used)."""
    ids = ids_of(ids, num_tokens)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: must be a positive integer")
    if not ids.size:
        raise ValueError("no token ids to measure")
    if shuffle_seed is not None:
        ids = ids[np.random.default_rng(shuffle_seed).permutation(ids.size)]
    size = min(batch_size, ids.size)
    n_batches = ids.size // size
    rows = ids[:n_batches * size].reshape(n_batches, size)
    step = max(1, MAX_CELLS // num_tokens)
    perplexities, used = [], []
    for start in range(0, n_batches, step):
        block = rows[start:start + step]
        offsets = np.arange(len(block), dtype=np.int64)[:, None] * num_tokens
        counts = np.bincount((block + offsets).ravel(), minlength=len(block) * num_tokens)
        counts = counts.reshape(len(block), num_tokens)
        perplexities.append(np.exp(entropy_rows(counts)))
        used.append((counts > 0).sum(1) / num_tokens)
    perplexities, used = np.concatenate(perplexities), np.concatenate(used)
    return {"perplexity": float(perplexities.mean()), "usage": float(used.mean()),
            "perplexity_sd": float(perplexities.std(ddof=1)) if n_batches > 1 else 0.0,
            "batches": int(n_batches), "batch_tokens": int(size)}


def batch_sizes(n: int, smallest: int = SMALLEST_BATCH) -> list[int]:
    """Batch sizes ``smallest``, twice that, ... while below ``n``, then ``n`` itself
    (the whole set as one batch)."""
    if n < 1 or smallest < 1:
        raise ValueError(f"n={n} and smallest={smallest} must be positive integers")
    sizes, b = [], smallest
    while b < n:
        sizes.append(b)
        b *= 2
    return sizes + [n]


def batch_curve(ids, num_tokens: int, sizes: list[int] | None = None, shuffle_seed: int | None = None) -> pd.DataFrame:
    """:func:`per_batch` at each batch size (default :func:`batch_sizes`), in order and,
    when ``shuffle_seed`` is given, shuffled with it too. One row per (order, size):
    ``order``, ``batch_tokens``, ``batches``, ``perplexity``, ``usage``, ``perplexity_sd``."""
    ids = ids_of(ids, num_tokens)
    sizes = sizes or batch_sizes(ids.size)
    orders = [(IN_ORDER, None)] + ([(SHUFFLED, shuffle_seed)] if shuffle_seed is not None else [])
    rows = []
    for order, seed in orders:
        for b in sizes:
            m = per_batch(ids, num_tokens, b, seed)
            rows.append({"order": order, "batch_tokens": m["batch_tokens"], "batches": m["batches"],
                         "perplexity": m["perplexity"], "usage": m["usage"], "perplexity_sd": m["perplexity_sd"]})
    return pd.DataFrame(rows)


def token_sizes(n: int, num_tokens: int, smallest_share: float = 1 / 8) -> list[int]:
    """Numbers of tokens evaluated: ``smallest_share`` x K (at least 1), twice that, ...
    while below ``n``, then ``n`` itself."""
    if n < 1:
        raise ValueError(f"n={n} is invalid: must be a positive integer")
    sizes, size = [], max(1, int(round(num_tokens * smallest_share)))
    while size < n:
        sizes.append(size)
        size *= 2
    return sizes + [n]


def first_n_curve(ids, num_tokens: int, sizes: list[int] | None = None) -> pd.DataFrame:
    """Whole-set perplexity and usage over the first N ids, for each N of ``sizes``
    (default :func:`token_sizes`): ``n_tokens``, ``n_over_k`` (N / K), ``perplexity``,
    ``usage``."""
    ids = ids_of(ids, num_tokens)
    rows = []
    for n in sizes or token_sizes(ids.size, num_tokens):
        m = whole_set(ids[:n], num_tokens)
        rows.append({"n_tokens": int(min(n, ids.size)), "n_over_k": min(n, ids.size) / num_tokens, **m})
    return pd.DataFrame(rows)


def measure_run(result: dict, positions: int, shuffle_seed: int = 0, smallest: int = SMALLEST_BATCH) -> dict:
    """Every measure of this module on one stored run (``result``: what
    :func:`vqstudy.training.train` returns), from its final embeddings and tokens; the
    whole-set numbers over every evaluation token from its final token counts.
    ``positions``: embeddings per example (1 for the MLP, 64 for the conv model's 8x8
    grid), so that the training batch is ``batch_size x positions`` tokens.

    Returns ``summary`` (one dict: K, D, the tokens evaluated and kept, the training
    batch, whole-set and per-batch perplexity and usage, their ratio, and the kept
    embeddings' agreement with the stored counts), ``batches`` (:func:`batch_curve`, in
    order and shuffled) and ``first_n`` (:func:`first_n_curve` on the kept ids, with the
    whole evaluation set as its last row when the kept ids are only its first part)."""
    cfg, final = result["config"], result["final"]
    k = int(cfg["codebook_size"])
    counts = final["counts"]
    ids = ids_of(assign(final["embeddings"], final["tokens"]), k)
    if not ids.size:
        raise ValueError("the run kept no evaluation embeddings (keep_embeddings = 0): nothing to measure per batch")
    n_all, n_kept = int(counts.sum()), int(ids.size)
    train_batch = int(cfg["batch_size"]) * positions
    whole = {"perplexity": metrics.perplexity(counts), "usage": metrics.usage(counts)}
    kept = whole_set(ids, k)
    at_batch = per_batch(ids, k, train_batch)
    shuffled = per_batch(ids, k, train_batch, shuffle_seed)
    at_k = whole_set(ids[:k], k) if n_kept >= k else {"perplexity": math.nan, "usage": math.nan}
    if n_kept == n_all:  # every evaluation embedding kept: the recomputed ids must give the stored counts
        mismatch = int(np.abs(np.bincount(ids, minlength=k) - counts.numpy()).sum()) / (2 * n_all)
    else:               # a first part: its counts can be at most the whole set's
        mismatch = int(np.clip(np.bincount(ids, minlength=k) - counts.numpy(), 0, None).sum()) / n_kept
    summary = {
        "codebook_size": k, "latent_dim": int(final["tokens"].shape[1]), "tokens_evaluated": n_all,
        "tokens_kept": n_kept, "batch_tokens": train_batch, "batch_over_k": train_batch / k,
        "perplexity": whole["perplexity"], "usage": whole["usage"],
        "kept_perplexity": kept["perplexity"], "kept_usage": kept["usage"],
        "batch_perplexity": at_batch["perplexity"], "batch_usage": at_batch["usage"],
        "batch_perplexity_sd": at_batch["perplexity_sd"], "batches": at_batch["batches"],
        "shuffled_batch_perplexity": shuffled["perplexity"], "shuffled_batch_usage": shuffled["usage"],
        "batch_ratio": at_batch["perplexity"] / whole["perplexity"],
        "batch_usage_ratio": at_batch["usage"] / whole["usage"] if whole["usage"] else math.nan,
        "perplexity_at_k": at_k["perplexity"], "usage_at_k": at_k["usage"],
        "mismatch": mismatch,
    }
    first = first_n_curve(ids, k)
    if n_all > n_kept:
        first = pd.concat([first, pd.DataFrame([{"n_tokens": n_all, "n_over_k": n_all / k, **whole}])],
                          ignore_index=True)
    first["source"] = ["embeddings"] * (len(first) - (n_all > n_kept)) + ["counts"] * (n_all > n_kept)
    return {"summary": summary, "batches": batch_curve(ids, k, batch_sizes(n_kept, smallest), shuffle_seed),
            "first_n": first}
