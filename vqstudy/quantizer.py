"""Vector quantization: nearest-token search, the VQ layer with its EMA ("statistical")
codebook update, and the K-means that initialises the codebook.

The distance between an embedding z and a token c is expanded as
``|z|^2 - 2 z.c + |c|^2``; ``|z|^2`` does not change which token is nearest, so the
search is one matrix product plus a row vector, done in tiles so that no ``N x K``
matrix ever exists (K reaches 2^16).

Why the CPU search looks the way it does (measured on 2 CPU cores; the book's
"Performance" appendix has the numbers):

- the matrix product runs near 100 GFLOP/s a core while its output tile stays in
  cache, and at a fraction of that once the tile spills to memory: tiles are a few
  MB, and each worker writes them into one buffer per call;
- on CPU ``argmin`` over a row is a scalar loop costing half as much as the matrix
  product itself, while ``amin`` (no index) is vectorised and ten times cheaper: the
  argmin runs in two stages, a vectorised ``amin`` over groups of ``GROUP`` tokens, then
  a true ``argmin`` over the group minima and inside the one winning group. The result,
  ties included, is exactly ``argmin`` of the distances: the lowest index wins;
- every multi-threaded torch operation ends in a barrier, and on a shared machine a
  descheduled thread stalls it: blocks of rows go to worker threads that each run torch
  single-threaded (see :func:`run_blocks`);
- memory freed by one step is kept for the next instead of being returned to the
  system and faulted in again (see :func:`keep_freed_memory`);
- what the quantizer step needs from each row besides its token's index (the token,
  the residual, the squared error) is made right after the row's block is searched,
  in the same worker (see :func:`assign`).
"""

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

MAX_CHUNK_ELEMENTS = 1 << 19  # distances per tile: 2 MB of float32; measured faster than 1 MB (fewer calls)
ACCELERATOR_CHUNK_ELEMENTS = 1 << 24  # distances per chunk on a GPU: 64 MB, few kernel launches
TILE_TOKENS = 1024            # tokens per tile (columns); rows fill up to MAX_CHUNK_ELEMENTS
GROUP = 16                    # tokens per group of the two-stage argmin
MIN_BLOCK_ROWS = 64           # rows per block of work, at least
BLOCKS_PER_WORKER = 2         # blocks of rows per worker thread, at least (when there are rows enough)
SMALL_WORK = 1 << 22          # N * K * D below this: one plain product and argmin, no tiles
PARALLEL_WORK = 1 << 24       # N * K * D from this on: worker threads (about 0.3 ms on one core)
KMEANS_PP_BATCH = 256         # k-means++ proposals drawn per refresh of the distances


def keep_freed_memory() -> None:
    """Have glibc keep up to 64 MiB of freed memory for reuse instead of handing it back.

    By default glibc gives freed memory back to the system once a few MB are free at
    the top of the heap, so each step's temporaries (2 MB each for N = 8192, D = 64) are
    page-faulted in again, one 4 KiB page at a time, and two threads faulting at once
    queue on the kernel's lock for the process's memory map. Measured at K = 512: the
    step outside the search took 1.9 ms that way and 1.15 ms with the memory kept; the
    search's blocks, when they also wrote fresh outputs, 5.8 ms against 4.6 ms. Dask
    workers need it too: their nanny sets ``MALLOC_TRIM_THRESHOLD_=65536``, which also
    freezes glibc's mmap threshold at 128 KiB (a CIFAR-10 run took 42 s instead of 16 s).
    Called once when this module is imported; a no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: glibc's maximum; larger blocks are mmap-ed
        libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD: give memory back above 64 MiB free
    except (OSError, AttributeError):
        pass


keep_freed_memory()


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
    where ``argmin`` is as fast as the matrix product's output is written."""
    c_sq = codebook.pow(2).sum(1)
    rows = max(1, max_chunk_elements // max(1, codebook.shape[0]))
    out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    for start in range(0, z.shape[0], rows):
        dist = torch.addmm(c_sq, z[start:start + rows], codebook.t(), beta=1.0, alpha=-2.0)
        torch.argmin(dist, 1, out=out[start:start + rows])
    return out


_allowed = threading.local()  # the thread count the caller allowed, while one_torch_thread holds


@contextmanager
def one_torch_thread():
    """Torch runs single-threaded inside (a process-wide setting, restored after); the
    searches inside still use the caller's thread count (:func:`allowed_threads`)."""
    previous = torch.get_num_threads()
    outer = getattr(_allowed, "threads", None)
    _allowed.threads = outer or previous
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)
        _allowed.threads = outer


def allowed_threads() -> int:
    """``torch.get_num_threads()`` as the caller set it, also under one_torch_thread."""
    return getattr(_allowed, "threads", None) or torch.get_num_threads()


_pool: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool)


def worker_pool(workers: int) -> ThreadPoolExecutor:
    """A pool kept between calls: starting threads costs more than a small search."""
    global _pool
    if _pool is None or _pool[0] != workers:
        if _pool is not None:
            _pool[1].shutdown(wait=False)
        _pool = (workers, ThreadPoolExecutor(workers, thread_name_prefix="vqstudy-search"))
    return _pool[1]


def _forget_pool_after_fork() -> None:  # a forked child has the pool object but not its threads
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def run_blocks(work, blocks, workers: int) -> None:
    """``work(block)`` for every block, on ``workers`` threads that take the next block
    when they finish one. Call it under :func:`one_torch_thread`.

    Why not torch's own threads: every torch operation is a parallel region that ends
    in a barrier, so a tile of five operations waits five times for the slowest thread,
    and on a shared machine a thread that is descheduled stalls each barrier for a
    scheduler time slice (2-thread tiles measured 5-10x slower than 1-thread ones
    there). Whole blocks per thread leave one join per call, and a thread that falls
    behind simply takes fewer blocks. scikit-learn's K-means does the same (one BLAS
    thread, parallel over chunks of rows). Torch releases the GIL inside operations.
    """
    if workers <= 1:
        for block in blocks:
            work(block)
        return
    for _ in worker_pool(workers).map(work, blocks):
        pass


def nearest_token_grouped(z: torch.Tensor, codebook: torch.Tensor, max_chunk_elements: int = MAX_CHUNK_ELEMENTS,
                          group: int = GROUP, workers: int = 1, after_block=None) -> torch.Tensor:
    """Cache-sized tiles and the two-stage argmin (see the module docstring): the CPU
    path, meant to run under :func:`one_torch_thread`.

    Rows are split into blocks, one block at a time per worker thread. Per block and
    tile of tokens: one ``addmm`` into the worker's preallocated buffer (a fresh buffer
    per tile costs its page faults every time), an ``amin`` over groups, an
    ``argmin`` over the group minima, a gather of the winning group and a ``min``
    inside it. Across tiles of tokens the winner is the tile with the smallest value,
    the earliest on a tie, so the lowest index wins. ``after_block(r0, idx)``, if given,
    runs in the worker right after each block's search, while its rows are in cache.
    """
    n, k = z.shape[0], codebook.shape[0]
    rows, width = tile_shape(n, k, max_chunk_elements, group)
    blocks = BLOCKS_PER_WORKER * workers  # at least, so that a worker that falls behind takes fewer
    rows = min(rows, max(MIN_BLOCK_ROWS, ceil_to(n, blocks) // blocks))
    tokens, norms = grouped_layout(codebook, width, group)
    starts = list(range(0, tokens.shape[0], width))
    offsets = torch.tensor(starts, dtype=torch.long)
    out = torch.empty(n, dtype=torch.long)
    local = threading.local()

    def search(r0: int) -> None:
        if not hasattr(local, "dist"):
            local.dist = torch.empty(rows * width, dtype=z.dtype)
            local.group_min = torch.empty(rows * (width // group), dtype=z.dtype)
            local.value = torch.empty(len(starts), rows, dtype=z.dtype)       # per tile: best distance,
            local.column = torch.empty(len(starts), rows, dtype=torch.long)   # its group's column j
            local.member = torch.empty(len(starts), rows, dtype=torch.long)   # and its member g
        block = z[r0:r0 + rows]
        r = block.shape[0]
        value, column, member = local.value[:, :r], local.column[:, :r], local.member[:, :r]
        for t, c0 in enumerate(starts):
            c = min(width, tokens.shape[0] - c0)
            w = c // group
            d = torch.addmm(norms[c0:c0 + c], block, tokens[c0:c0 + c].t(), alpha=-2.0,
                            out=local.dist[:r * c].view(r, c)).view(r, group, w)
            gmin = torch.amin(d, 1, out=local.group_min[:r * w].view(r, w))
            j = torch.argmin(gmin, 1, out=column[t])
            candidates = d.gather(2, j.view(r, 1, 1).expand(r, group, 1)).view(r, group)
            torch.min(candidates, 1, out=(value[t], member[t]))
        if len(starts) == 1:
            torch.add(column[0] * group, member[0], out=out[r0:r0 + r])
        else:
            best = value.argmin(0, keepdim=True)
            j, g = column.gather(0, best)[0], member.gather(0, best)[0]
            torch.add(offsets[best[0]], j * group + g, out=out[r0:r0 + r])
        if after_block is not None:
            after_block(r0, out[r0:r0 + r])

    run_blocks(search, range(0, n, rows), min(workers, ceil_to(n, rows) // rows))
    return out


def nearest_token(z: torch.Tensor, codebook: torch.Tensor, max_chunk_elements: int | None = None,
                  workers: int | None = None, after_block=None) -> torch.Tensor:
    """Index of the nearest token (squared Euclidean) for every row of ``z`` (N, D); on a
    tie, the lowest index. At most ``max_chunk_elements`` distances exist at once per
    worker thread (default: ``MAX_CHUNK_ELEMENTS`` on CPU, ``ACCELERATOR_CHUNK_ELEMENTS``
    on a GPU). ``workers`` (CPU only) defaults to :func:`allowed_threads` for a
    search of at least ``PARALLEL_WORK`` multiply-adds, to one below that; a search
    below ``SMALL_WORK`` on one worker is a plain product and argmin (overheads rule).
    ``after_block(r0, idx)``: called for each block of rows found (see :func:`assign`)."""
    if z.device.type != "cpu":
        idx = nearest_token_plain(z, codebook, max_chunk_elements or ACCELERATOR_CHUNK_ELEMENTS)
    else:
        max_chunk_elements = max_chunk_elements or MAX_CHUNK_ELEMENTS
        work = z.shape[0] * codebook.shape[0] * z.shape[1]
        if workers is None:
            workers = allowed_threads() if work >= PARALLEL_WORK else 1
        with one_torch_thread():  # the layout and the final gathers too, not only the tiles
            if work >= SMALL_WORK or workers > 1:
                return nearest_token_grouped(z, codebook, max_chunk_elements, GROUP, workers, after_block)
            idx = nearest_token_plain(z, codebook, max_chunk_elements)
    if after_block is not None:
        after_block(0, idx)
    return idx


def assign(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(idx, tokens, residual, squared_error)`` for the rows of ``z`` (N, D): the
    nearest token's index, the token itself, ``z - token``, and the sum of the squared
    residuals, which is all a quantizer step needs from its rows.

    On CPU the last three are made inside the search's worker threads, block by block,
    while each block's rows are still in cache: made after the search on one thread,
    they cost a quarter of the step outside the search at K = 512 (reading rows the
    search had pushed out of cache). The partial sums are added in block order, so the
    result does not depend on which thread took which block.
    """
    n = z.shape[0]
    tokens = torch.empty(n, z.shape[1], dtype=z.dtype, device=z.device)
    residual = torch.empty_like(tokens)
    partial = {}

    def after_block(r0: int, idx: torch.Tensor) -> None:
        rows = slice(r0, r0 + idx.shape[0])
        token = torch.index_select(codebook, 0, idx, out=tokens[rows])
        diff = torch.sub(z[rows], token, out=residual[rows]).view(-1)
        partial[r0] = torch.dot(diff, diff)

    idx = nearest_token(z, codebook, after_block=after_block)
    squared_error = torch.stack([partial[r0] for r0 in sorted(partial)]).sum()
    return idx, tokens, residual, squared_error


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
    which is k-means++; one matrix product per batch then updates all distances.
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
    keeps its previous centre. Runs on the device of ``x`` (a GPU if it is there).
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if x.shape[0] < k:
        raise ValueError(f"K-means needs at least k={k} points, got {x.shape[0]}")
    x = x.detach().float()
    g = torch.Generator().manual_seed(seed)
    with one_torch_thread():  # the small per-iteration operations too (see run_blocks)
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
    """``(tokens, squared_error / numel)`` from :func:`assign`'s results: the tokens as
    the straight-through output, whose gradient passes to ``z`` unchanged, and the
    commitment loss ``mean |z - token|^2``, whose gradient ``2 (z - token) / numel``
    goes to ``z`` only (the codebook is a buffer).

    Autograd on ``z + (q - z).detach()`` and ``F.mse_loss(z, q)`` computes the same
    (the output there equals ``q`` up to rounding), through six temporaries the size
    of ``z`` made one after another on one thread; here the search made the tokens
    and residuals block by block, and backward adds one product.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, tokens: torch.Tensor, residual: torch.Tensor, squared_error: torch.Tensor):
        ctx.save_for_backward(residual)
        ctx.shape = z.shape
        return tokens.view(z.shape), squared_error / residual.numel()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, grad_commitment: torch.Tensor):
        (residual,) = ctx.saved_tensors
        with one_torch_thread():
            scale = grad_commitment * (2.0 / residual.numel())
            return torch.addcmul(grad_out, residual.view(ctx.shape), scale), None, None, None


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
        if vectors_per_batch is not None:
            counts = counts * (vectors_per_batch / counts.sum())
        self.codebook.copy_(centres)
        self.ema_count.copy_(counts)
        self.ema_sum.copy_(centres * counts[:, None])

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        """One EMA step: ``sum <- decay sum + (1 - decay) (sum of the rows assigned)``,
        the same for the counts, then tokens = sums / smoothed counts, written in place
        (at small N the EMA's cost is set by K x D, not by the batch). The rows are summed
        first and scaled once: ``index_add_`` with ``alpha`` scales every row and took
        three times as long."""
        counts, sums = cluster_sums(flat, idx, self.num_tokens)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_tokens * self.eps) * n
        torch.div(self.ema_sum, smoothed[:, None], out=self.codebook)

    def forward(self, z: torch.Tensor):
        """``z`` (..., D) -> ``(z_q, indices (...), commitment_loss)``; the EMA update
        runs in training mode only."""
        with one_torch_thread():  # small operations: see run_blocks
            flat = z.detach().reshape(-1, self.dim)
            idx, tokens, residual, squared_error = assign(flat, self.codebook)
            z_q, commitment = StraightThrough.apply(z, tokens, residual, squared_error)
            if self.training:
                self.ema_update(flat, idx)
        return z_q, idx.view(z.shape[:-1]), commitment
