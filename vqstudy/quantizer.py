"""Vector quantization: nearest-token search, the VQ layer with its EMA ("statistical")
codebook update, and the K-means that initialises the codebook.

The distance between an embedding z and a token c is expanded as
``|z|^2 - 2 z.c + |c|^2``; ``|z|^2`` does not change which token is nearest, so the
search is one matrix product plus a row vector, done in chunks so that no ``N x K``
matrix ever exists (K reaches 2^16).

The study trains every run on one torch thread (:func:`vqstudy.training.torch_threads`),
so the CPU search is written for one thread; it uses whatever threads the caller gave
torch and changes no process-wide setting. Why it looks the way it does (measured on
one thread; the book's "Performance" appendix has the numbers):

- the matrix product runs several times faster while its output tile stays in cache
  than once it spills to memory: tiles are a couple of MB, written into one buffer;
- on CPU ``argmin`` over a row is a scalar loop costing about half as much as the
  matrix product itself, while ``amin`` (no index) is vectorised and ten times cheaper:
  the argmin runs in two stages, a vectorised ``amin`` over groups of ``GROUP`` tokens,
  then a true ``argmin`` over the group minima and inside the one winning group. The
  result, ties included, is exactly ``argmin`` of the distances: the lowest index wins.

On a GPU the search is the plain chunked product and ``argmin``, which is fast there.
"""

import numpy as np
import torch
from torch import nn

MAX_CHUNK_ELEMENTS = 1 << 19          # distances per CPU tile: 2 MB of float32, stays in cache
ACCELERATOR_CHUNK_ELEMENTS = 1 << 24  # distances per chunk on a GPU: 64 MB, few kernel launches
TILE_TOKENS = 1024                    # tokens per tile (columns); rows fill up to MAX_CHUNK_ELEMENTS
GROUP = 16                            # tokens per group of the two-stage argmin
MIN_TILED_TOKENS = 512                # fewer tokens: group minima too short to vectorise, plain argmin wins
MIN_TILED_ROWS = 256                  # fewer rows: the tiles' fixed costs per call rule, plain argmin wins
KMEANS_PP_BATCH = 256                 # k-means++ proposals drawn per refresh of the distances


def ceil_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def grouped_layout(codebook: torch.Tensor, tile: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The codebook reordered so that, inside each tile of ``tile`` tokens, the members
    of a group of ``group`` consecutive tokens lie ``tile // group`` columns apart.

    Then the distances of one tile, viewed as ``(rows, group, tile // group)``, give the
    group minima as an ``amin`` over the middle axis: an elementwise minimum of
    contiguous vectors, which vectorises. Position ``g * W + j`` of a tile starting at
    token ``c0`` holds token ``c0 + j * group + g``. The codebook is padded to a
    multiple of ``group`` with tokens at infinite distance. Returns the reordered
    tokens and their squared norms.
    """
    k, d = codebook.shape
    padded = ceil_to(k, group)
    sq = codebook.pow(2).sum(1)
    if padded != k:
        codebook = torch.cat([codebook, codebook.new_zeros(padded - k, d)])
        sq = torch.cat([sq, sq.new_full((padded - k,), float("inf"))])
    tokens, norms = [], []
    for c0 in range(0, padded, tile):
        width = min(tile, padded - c0) // group
        tokens.append(codebook[c0:c0 + width * group].view(width, group, d).transpose(0, 1).reshape(-1, d))
        norms.append(sq[c0:c0 + width * group].view(width, group).t().reshape(-1))
    return torch.cat(tokens), torch.cat(norms)


def tile_shape(n: int, k: int, max_chunk_elements: int, group: int) -> tuple[int, int]:
    """(rows, tokens) of a distance tile: at most ``TILE_TOKENS`` tokens (a multiple of
    ``group``) and as many rows as fit in ``max_chunk_elements``."""
    tokens = min(TILE_TOKENS, ceil_to(k, group), max(group, max_chunk_elements // group * group))
    return max(1, min(n, max_chunk_elements // tokens)), tokens


def nearest_token_plain(z: torch.Tensor, codebook: torch.Tensor,
                        max_chunk_elements: int = MAX_CHUNK_ELEMENTS) -> torch.Tensor:
    """Row chunks of all K distances and a plain ``argmin``: the path for accelerators,
    where ``argmin`` is as fast as the matrix product's output is written, and for
    searches too small for the tiles' overheads to pay."""
    c_sq = codebook.pow(2).sum(1)
    rows = max(1, max_chunk_elements // max(1, codebook.shape[0]))
    out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    for start in range(0, z.shape[0], rows):
        dist = torch.addmm(c_sq, z[start:start + rows], codebook.t(), beta=1.0, alpha=-2.0)
        torch.argmin(dist, 1, out=out[start:start + rows])
    return out


def nearest_token_grouped(z: torch.Tensor, codebook: torch.Tensor, max_chunk_elements: int = MAX_CHUNK_ELEMENTS,
                          group: int = GROUP) -> torch.Tensor:
    """Cache-sized tiles and the two-stage argmin (see the module docstring): the CPU path.

    Per block of rows and tile of tokens: one ``addmm`` into a buffer allocated once per
    call (a fresh one per tile costs its page faults every time), an ``amin`` over
    groups, an ``argmin`` over the group minima, a gather of the winning group and a
    ``min`` inside it. Across tiles of tokens the winner is the tile with the smallest
    value, the earliest on a tie, so the lowest index wins.
    """
    n, k = z.shape[0], codebook.shape[0]
    rows, width = tile_shape(n, k, max_chunk_elements, group)
    tokens, norms = grouped_layout(codebook, width, group)
    starts = list(range(0, tokens.shape[0], width))
    offsets = torch.tensor(starts, dtype=torch.long)
    out = torch.empty(n, dtype=torch.long)
    dist = torch.empty(rows * width, dtype=z.dtype)
    group_min = torch.empty(rows * (width // group), dtype=z.dtype)
    value = torch.empty(len(starts), rows, dtype=z.dtype)        # per tile: best distance,
    column = torch.empty(len(starts), rows, dtype=torch.long)    # its group's column j
    member = torch.empty(len(starts), rows, dtype=torch.long)    # and its member g
    for r0 in range(0, n, rows):
        block = z[r0:r0 + rows]
        r = block.shape[0]
        val, col, mem = value[:, :r], column[:, :r], member[:, :r]
        for t, c0 in enumerate(starts):
            c = min(width, tokens.shape[0] - c0)
            w = c // group
            d = torch.addmm(norms[c0:c0 + c], block, tokens[c0:c0 + c].t(), alpha=-2.0,
                            out=dist[:r * c].view(r, c)).view(r, group, w)
            gmin = torch.amin(d, 1, out=group_min[:r * w].view(r, w))
            j = torch.argmin(gmin, 1, out=col[t])
            candidates = d.gather(2, j.view(r, 1, 1).expand(r, group, 1)).view(r, group)
            torch.min(candidates, 1, out=(val[t], mem[t]))
        if len(starts) == 1:
            torch.add(col[0] * group, mem[0], out=out[r0:r0 + r])
        else:
            best = val.argmin(0, keepdim=True)
            torch.add(offsets[best[0]], col.gather(0, best)[0] * group + mem.gather(0, best)[0],
                      out=out[r0:r0 + r])
    return out


def tiled(n: int, k: int) -> bool:
    """Whether a CPU search of ``n`` rows among ``k`` tokens takes the tiled path."""
    return n >= MIN_TILED_ROWS and k >= MIN_TILED_TOKENS


def nearest_token(z: torch.Tensor, codebook: torch.Tensor, max_chunk_elements: int | None = None) -> torch.Tensor:
    """Index of the nearest token (squared Euclidean) for every row of ``z`` (N, D); on a
    tie, the lowest index. At most ``max_chunk_elements`` distances exist at once
    (default: ``MAX_CHUNK_ELEMENTS`` on CPU, ``ACCELERATOR_CHUNK_ELEMENTS`` on a GPU).
    On CPU a search of at least ``MIN_TILED_ROWS`` rows and ``MIN_TILED_TOKENS`` tokens
    takes the tiled two-stage path (measured faster from there on, whatever D), a
    smaller one a plain product and argmin."""
    if z.device.type != "cpu":
        return nearest_token_plain(z, codebook, max_chunk_elements or ACCELERATOR_CHUNK_ELEMENTS)
    max_chunk_elements = max_chunk_elements or MAX_CHUNK_ELEMENTS
    if tiled(z.shape[0], codebook.shape[0]):
        return nearest_token_grouped(z, codebook, max_chunk_elements)
    return nearest_token_plain(z, codebook, max_chunk_elements)


def flush_subnormal_(x: torch.Tensor) -> torch.Tensor:
    """Set every entry of ``x`` below the smallest normal float of its dtype to zero, in place.

    Why: a token that is never chosen decays by ``decay`` a step, and after about 8700
    steps at 0.99 its EMA statistics fall below 1.18e-38 (float32's smallest normal
    number). Such subnormal numbers never reach zero (the smallest, times 0.99, rounds
    back to itself) and, on CPUs that handle them in microcode, make every matrix product
    they enter about 90x slower: a long run's nearest-token search slowed down 36x (issue
    27). Zero is what they stand for: a subnormal entry differs from 0 by less than
    1.2e-38, nothing any metric can see.
    """
    return x.masked_fill_(x.abs() < torch.finfo(x.dtype).tiny, 0.0)


def cluster_sums(z: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token count and sum of the assigned rows, without an N x K one-hot matrix."""
    counts = torch.bincount(idx, minlength=k).to(z.dtype)
    sums = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, idx, z)
    return counts, sums


def distance_to_nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared distance of every row of ``x`` to its nearest centre, the difference
    computed directly so that a point that is a centre is exactly 0 from it."""
    return (x - centres[nearest_token(x, centres)]).pow(2).sum(1)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability proportional to the
    squared distance to the nearest centre already chosen.

    Drawn exactly so, but without a pass over all points per centre (k = 8192 passes
    took minutes): proposals come in batches from the distances as they were at the
    start of the batch (``stale``), and each is accepted with probability
    ``current / stale`` where ``current`` also counts the centres accepted since.
    Rejection sampling makes each accepted point a draw proportional to ``current``,
    which is k-means++; one search per batch then updates all distances.
    A point already chosen has distance 0 and is never drawn again. Fewer distinct
    points than ``k``: the remaining centres repeat random points.
    """
    n = x.shape[0]
    chosen = torch.randint(n, (1,), generator=generator)
    closest = distance_to_nearest(x, x[chosen.to(x.device)])
    while chosen.numel() < k:
        stale = closest.double().cpu()
        cumulative = stale.cumsum(0)
        if cumulative[-1] <= 0:  # fewer distinct points than k: repeat points rather than fail
            rest = torch.randint(n, (k - chosen.numel(),), generator=generator)
            chosen = torch.cat([chosen, rest])
            break
        size = min(KMEANS_PP_BATCH, k - chosen.numel())
        draws = torch.rand(size, generator=generator, dtype=torch.float64) * cumulative[-1]
        accept_draws = torch.rand(size, generator=generator, dtype=torch.float64)
        proposals = torch.searchsorted(cumulative, draws, right=True).clamp_(max=n - 1)
        points = x[proposals.to(x.device)]
        # exact differences, so that a point proposed twice is exactly 0 from itself
        between = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")
        between = between.double().pow(2).cpu().numpy()
        stale_at, uniform = stale[proposals].numpy(), accept_draws.numpy()
        current = stale_at.copy()
        accepted = []
        for i in range(size):
            if uniform[i] * stale_at[i] < current[i]:
                accepted.append(i)
                np.minimum(current, between[i], out=current)
                if chosen.numel() + len(accepted) == k:
                    break
        new = proposals[accepted]
        chosen = torch.cat([chosen, new])
        closest = torch.minimum(closest, distance_to_nearest(x, x[new.to(x.device)]))
    return x[chosen.to(x.device)].clone()


def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, init: torch.Tensor | None = None,
           init_method: str = "k-means++") -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's K-means on rows of ``x``. Returns ``(centres (k, D), counts (k,))``.

    ``init``: given initial centres (used as is); otherwise ``init_method`` is
    ``"k-means++"`` or ``"random"`` (k distinct rows). A cluster that ends up empty
    keeps its previous centre. Runs on the device of ``x`` (a GPU if it is there), on
    the torch threads the caller set.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if x.shape[0] < k:
        raise ValueError(f"K-means needs at least k={k} points, got {x.shape[0]}")
    x = x.detach().float()
    g = torch.Generator().manual_seed(seed)
    if init is not None:
        centres = init.detach().float().clone().to(x.device)
    elif init_method == "k-means++":
        centres = kmeans_plus_plus(x, k, g)
    elif init_method == "random":
        centres = x[torch.randperm(x.shape[0], generator=g)[:k].to(x.device)].clone()
    else:
        raise ValueError(f"init_method must be 'k-means++' or 'random', got {init_method!r}")
    for _ in range(iters):
        idx = nearest_token(x, centres)
        counts, sums = cluster_sums(x, idx, k)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    counts = torch.bincount(nearest_token(x, centres), minlength=k).float()
    return centres, counts


class StraightThrough(torch.autograd.Function):
    """``(tokens, |residual|^2 / numel)``: the tokens as the straight-through output, whose
    gradient passes to ``z`` unchanged, and the commitment loss ``mean |z - token|^2``,
    whose gradient ``2 (z - token) / numel`` goes to ``z`` only (the codebook is a buffer).

    Autograd on ``z + (q - z).detach()`` and ``F.mse_loss(z, q)`` computes the same (the
    output there equals ``q`` up to rounding) through six temporaries the size of ``z``;
    here forward keeps the residual it was given and backward is one ``addcmul``.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, tokens: torch.Tensor, residual: torch.Tensor):
        ctx.save_for_backward(residual)
        ctx.shape = z.shape
        flat = residual.view(-1)
        return tokens.view(z.shape), torch.dot(flat, flat) / flat.numel()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, grad_commitment: torch.Tensor):
        (residual,) = ctx.saved_tensors
        scale = grad_commitment * (2.0 / residual.numel())
        return torch.addcmul(grad_out, residual.view(ctx.shape), scale), None, None


class VectorQuantizer(nn.Module):
    """Nearest-token quantization with a straight-through gradient and an EMA codebook.

    The codebook is not a parameter: it follows the VQ-VAE paper's appendix, each token
    an exponential moving average (``decay``) of the embeddings assigned to it, with
    Laplace smoothing (``eps``) of the counts so that a token that is never chosen does
    not divide by zero. The encoder gets the decoder's gradient through the
    straight-through estimator and is pulled toward its token by the commitment loss
    (weighted by ``beta`` in the training loss).
    """

    def __init__(self, num_tokens: int, dim: int, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        if num_tokens <= 0:
            raise ValueError(f"num_tokens must be positive, got {num_tokens}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.num_tokens, self.dim, self.decay, self.eps = num_tokens, dim, decay, eps
        self.register_buffer("codebook", torch.randn(num_tokens, dim))
        self.register_buffer("ema_count", torch.ones(num_tokens))
        self.register_buffer("ema_sum", self.codebook.clone())

    @torch.no_grad()
    def init_codebook(self, embeddings: torch.Tensor, iters: int = 20, seed: int = 0,
                      vectors_per_batch: int | None = None) -> None:
        """K-means on ``embeddings`` (N, D) gives the tokens. The EMA counts start at the
        K-means cluster sizes rescaled to one batch, so the first updates blend
        smoothly instead of being dominated by an empty history."""
        centres, counts = kmeans(embeddings.reshape(-1, self.dim), self.num_tokens, iters=iters, seed=seed)
        self.set_codebook(centres, counts, vectors_per_batch)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        """One EMA step: ``sum <- decay sum + (1 - decay) (sum of the rows assigned)``,
        the same for the counts, then tokens = sums / smoothed counts, written in place.
        The rows are summed first and scaled once (``index_add_`` with ``alpha`` scales
        every row). Values that decay below the smallest normal float become zero
        (:func:`flush_subnormal_`); until a statistic gets there, which takes about 8700
        steps without being chosen at decay 0.99, nothing differs from the plain update."""
        counts, sums = cluster_sums(flat, idx, self.num_tokens)
        flush_subnormal_(self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay))
        flush_subnormal_(self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay))
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_tokens * self.eps) * n
        flush_subnormal_(torch.div(self.ema_sum, smoothed[:, None], out=self.codebook))

    def forward(self, z: torch.Tensor):
        """``z`` (..., D) -> ``(z_q, indices (...), commitment_loss)``; the EMA update
        runs in training mode only."""
        flat = z.detach().reshape(-1, self.dim)
        idx = nearest_token(flat, self.codebook)
        tokens = self.codebook[idx]
        z_q, commitment = StraightThrough.apply(z, tokens, flat - tokens)
        if self.training:
            self.ema_update(flat, idx)
        return z_q, idx.view(z.shape[:-1]), commitment

    @torch.no_grad()
    def set_codebook(self, tokens: torch.Tensor, counts: torch.Tensor | None = None,
                     vectors_per_batch: int | None = None) -> None:
        """Start from given ``tokens`` (K, D) (the initialisers of :mod:`vqstudy.inits`).
        ``counts``: how many embeddings each token stands for (a clustering's cluster
        sizes), or ``None`` for an equal share each; rescaled to one batch of
        ``vectors_per_batch`` vectors when given, as :meth:`init_codebook` does."""
        if tokens.shape != self.codebook.shape:
            raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not fit a codebook of shape "
                             f"{tuple(self.codebook.shape)}")
        counts = torch.ones(self.num_tokens, device=tokens.device) if counts is None else counts.float()
        if vectors_per_batch is not None:
            counts = counts * (vectors_per_batch / counts.sum())
        self.codebook.copy_(tokens)
        self.ema_count.copy_(counts)
        self.ema_sum.copy_(tokens * counts[:, None])


class GradientVectorQuantizer(nn.Module):
    """Nearest-token quantization whose tokens are learned by the optimizer: the VQ-VAE
    paper's own codebook loss instead of its appendix's EMA (``codebook_update="gradient"``
    of the training config).

    The codebook is a parameter. ``forward`` returns the weighted loss of the VQ-VAE paper,
    ``|sg[z] - e|^2 + beta |z - sg[e]|^2`` (each a mean over the elements of ``z``, as the
    study's commitment is): the first term's gradient reaches only the chosen tokens, the
    second's only ``z``; the training loop adds it as it is
    (:func:`vqstudy.adapters.loss_weight` is 1). Nothing changes in ``forward`` itself: no
    moving averages, no buffers. A token never chosen gets no gradient from the loss.
    The random codebook before K-means is drawn as :class:`VectorQuantizer` draws it (the
    same random numbers), and K-means starts it in the same way.
    """

    def __init__(self, num_tokens: int, dim: int, beta: float = 0.25):
        super().__init__()
        if num_tokens <= 0:
            raise ValueError(f"num_tokens must be positive, got {num_tokens}")
        if not beta >= 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        self.num_tokens, self.dim, self.beta = num_tokens, dim, beta
        self.codebook = nn.Parameter(torch.randn(num_tokens, dim))

    @torch.no_grad()
    def init_codebook(self, embeddings: torch.Tensor, iters: int = 20, seed: int = 0,
                      vectors_per_batch: int | None = None) -> None:
        """K-means on ``embeddings`` (N, D) gives the tokens (``vectors_per_batch`` is
        accepted for the common interface; there are no counts to rescale)."""
        centres, _ = kmeans(embeddings.reshape(-1, self.dim), self.num_tokens, iters=iters, seed=seed)
        self.set_codebook(centres)

    @torch.no_grad()
    def set_codebook(self, tokens: torch.Tensor, counts: torch.Tensor | None = None,
                     vectors_per_batch: int | None = None) -> None:
        """Start from given ``tokens`` (K, D), in place (the optimizer keeps the same
        parameter); ``counts`` and ``vectors_per_batch`` are accepted and not needed."""
        if tokens.shape != self.codebook.shape:
            raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not fit a codebook of shape "
                             f"{tuple(self.codebook.shape)}")
        self.codebook.copy_(tokens)

    def forward(self, z: torch.Tensor):
        """``z`` (..., D) -> ``(z_q, indices (...), codebook loss + beta * commitment)``."""
        flat = z.detach().reshape(-1, self.dim)
        idx = nearest_token(flat, self.codebook.detach())
        chosen = self.codebook[idx]                 # the gradient of the codebook loss reaches these rows
        tokens = chosen.detach()
        z_q, commitment = StraightThrough.apply(z, tokens, flat - tokens)
        codebook_loss = (chosen - flat).pow(2).mean()
        return z_q, idx.view(z.shape[:-1]), codebook_loss + self.beta * commitment
