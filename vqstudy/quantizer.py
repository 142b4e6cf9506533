"""Vector quantization: nearest-token search, the VQ layer with its EMA ("statistical")
codebook update, and the K-means that initialises the codebook.

The distance between an embedding z and a token c is expanded as
``|z|^2 - 2 z.c + |c|^2``; ``|z|^2`` does not change which token is nearest, so the
search is one matrix product plus a row vector, done in chunks of rows so that no
``N x K`` matrix larger than ``max_chunk_elements`` ever exists (K reaches 2^16).
"""

import torch
import torch.nn.functional as F
from torch import nn

MAX_CHUNK_ELEMENTS = 1 << 22  # 16 MB of float32 distances per chunk


def nearest_token(z: torch.Tensor, codebook: torch.Tensor,
                  max_chunk_elements: int = MAX_CHUNK_ELEMENTS) -> torch.Tensor:
    """Index of the nearest token (squared Euclidean) for every row of ``z`` (N, D)."""
    c_sq = codebook.pow(2).sum(1)
    rows = max(1, max_chunk_elements // max(1, codebook.shape[0]))
    out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    for start in range(0, z.shape[0], rows):
        chunk = z[start:start + rows]
        # c_sq - 2 z c^T, fused into one addmm
        dist = torch.addmm(c_sq, chunk, codebook.t(), beta=1.0, alpha=-2.0)
        out[start:start + rows] = dist.argmin(1)
    return out


def cluster_sums(z: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token count and sum of the assigned rows, without an N x K one-hot matrix."""
    counts = torch.bincount(idx, minlength=k).to(z.dtype)
    sums = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, idx, z)
    return counts, sums


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability proportional to the
    squared distance to the nearest centre already chosen."""
    n = x.shape[0]
    centres = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = torch.randint(n, (1,), generator=generator).item()
    centres[0] = x[first]
    closest = (x - centres[0]).pow(2).sum(1)
    for i in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: repeat points rather than fail
            pick = torch.randint(n, (1,), generator=generator).item()
        else:
            pick = torch.multinomial((closest / total).cpu(), 1, generator=generator).item()
        centres[i] = x[pick]
        closest = torch.minimum(closest, (x - centres[i]).pow(2).sum(1))
    return centres


def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, init: torch.Tensor | None = None,
           init_method: str = "k-means++") -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's K-means on rows of ``x``. Returns ``(centres (k, D), counts (k,))``.

    ``init``: given initial centres (used as is); otherwise ``init_method`` is
    ``"k-means++"`` or ``"random"`` (k distinct rows). A cluster that ends up empty
    keeps its previous centre.
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
        counts, sums = cluster_sums(flat, idx, self.num_tokens)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_tokens * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])

    def forward(self, z: torch.Tensor):
        """``z`` (..., D) -> ``(z_q, indices (...), commitment_loss)``; the EMA update
        runs in training mode only."""
        flat = z.reshape(-1, self.dim)
        idx = nearest_token(flat.detach(), self.codebook)
        q = self.codebook[idx].view_as(z)
        commitment = F.mse_loss(z, q)  # the codebook is a buffer: gradient goes to z only
        if self.training:
            self.ema_update(flat.detach(), idx)
        z_q = z + (q - z).detach()  # straight-through estimator
        return z_q, idx.view(z.shape[:-1]), commitment
