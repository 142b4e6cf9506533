"""Codebook initialisers: where the tokens start when quantized training begins.

The paper initialises the codebook with K-means on the encoder's outputs (summary); its
diagnosis of tokens collapse is that the *untrained* encoder's outputs are a poor place
to start from. Implementations start the codebook in other ways, most of them without
looking at the encoder at all. Each function here is one such way, written so that a run
can switch between them by name (``Config.codebook_init``):

- without the encoder: ``normal`` (torch's ``nn.Embedding`` default), ``uniform``
  (U(-1/K, 1/K), the common PyTorch VQ-VAE implementations), ``kaiming_uniform``
  (vector-quantize-pytorch's default);
- from a sample of the encoder's outputs (embeddings): ``embedding_normal``,
  ``embedding_box``, ``embedding_sample``, ``kmeans++``, ``kmeans``, ``gmm``, ``ward``,
  ``farthest_point``.

Every initialiser takes the embeddings sample ``x`` (N, D), the number of tokens ``k``
and a ``seed``, and returns ``(tokens (k, D), counts (k,) or None)``: ``counts`` are
the cluster sizes when the method is a clustering (the EMA update starts from them), else
``None`` (every token then starts with an equal share; see
:meth:`vqstudy.quantizer.VectorQuantizer.set_codebook`). Same arguments, same result.
K-means itself lives in :mod:`vqstudy.quantizer`; it is called from here.
"""

import numpy as np
import torch
from torch import nn

from vqstudy.quantizer import kmeans, kmeans_plus_plus

SUBSAMPLE = 5000  # embeddings the scikit-learn clusterings (Gaussian mixture, Ward) are fitted on
GMM_MAX_ITER = 50  # EM iterations at most (it stops earlier when the likelihood settles)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def on_device_of(x: torch.Tensor, tokens: torch.Tensor, counts: torch.Tensor | None = None):
    """Tokens (float32) and counts on the device of the embeddings."""
    tokens = tokens.float().to(x.device)
    return tokens, None if counts is None else counts.float().to(x.device)


def subsample(x: torch.Tensor, k: int, seed: int, size: int = SUBSAMPLE) -> np.ndarray:
    """At most ``size`` rows of ``x``, drawn without replacement, as float64 numpy (what
    scikit-learn fits); a clear error if fewer than ``k`` remain."""
    n = x.shape[0]
    rows = torch.randperm(n, generator=generator(seed))[:size] if n > size else torch.arange(n)
    if len(rows) < k:
        raise ValueError(f"k={k} tokens need at least {k} embeddings; got {len(rows)}")
    return x[rows.to(x.device)].detach().double().cpu().numpy()


# --- without the encoder ---------------------------------------------------------------

def normal(x: torch.Tensor, k: int, seed: int):
    """N(0, 1) in every dimension: torch's ``nn.Embedding`` default."""
    return on_device_of(x, torch.randn(k, x.shape[1], generator=generator(seed)))


def uniform(x: torch.Tensor, k: int, seed: int):
    """U(-1/K, 1/K) in every dimension: the common PyTorch VQ-VAE implementations
    (``embedding.weight.data.uniform_(-1/K, 1/K)``)."""
    tokens = torch.empty(k, x.shape[1]).uniform_(-1.0 / k, 1.0 / k, generator=generator(seed))
    return on_device_of(x, tokens)


def kaiming_uniform(x: torch.Tensor, k: int, seed: int):
    """Kaiming-uniform on a (1, K, D) tensor, bound sqrt(6 / (K D)): vector-quantize-pytorch's
    default (its ``uniform_init(num_codebooks, codebook_size, dim)``)."""
    tokens = nn.init.kaiming_uniform_(torch.empty(1, k, x.shape[1]), generator=generator(seed))[0]
    return on_device_of(x, tokens)


def kaiming_bound(k: int, dim: int) -> float:
    """The bound of :func:`kaiming_uniform`: gain sqrt(2) times sqrt(3 / fan_in), fan_in = K D."""
    return float(np.sqrt(6.0 / (k * dim)))


# --- from the embeddings ---------------------------------------------------------------

def embedding_normal(x: torch.Tensor, k: int, seed: int):
    """Normal with the embeddings' mean and standard deviation, per dimension."""
    mean, std = x.float().mean(0).cpu(), x.float().std(0).cpu()
    return on_device_of(x, mean + std * torch.randn(k, x.shape[1], generator=generator(seed)))


def embedding_box(x: torch.Tensor, k: int, seed: int):
    """Uniform over the embeddings' bounding box (per-dimension min to max)."""
    low, high = x.float().amin(0).cpu(), x.float().amax(0).cpu()
    return on_device_of(x, low + (high - low) * torch.rand(k, x.shape[1], generator=generator(seed)))


def embedding_sample(x: torch.Tensor, k: int, seed: int):
    """K embeddings chosen at random, without replacement."""
    if x.shape[0] < k:
        raise ValueError(f"k={k} tokens need at least {k} embeddings; got {x.shape[0]}")
    return on_device_of(x, x[torch.randperm(x.shape[0], generator=generator(seed))[:k].to(x.device)])


def kmeans_pp(x: torch.Tensor, k: int, seed: int):
    """k-means++ seeding alone (no Lloyd iteration): each token an embedding drawn with
    probability proportional to its squared distance to the tokens drawn before."""
    if x.shape[0] < k:
        raise ValueError(f"k={k} tokens need at least {k} embeddings; got {x.shape[0]}")
    return on_device_of(x, kmeans_plus_plus(x.detach().float(), k, generator(seed)))


def kmeans_lloyd(x: torch.Tensor, k: int, seed: int, iters: int = 20):
    """K-means (k-means++ seeding, then Lloyd iterations): the paper's initialisation."""
    return kmeans(x, k, iters=iters, seed=seed)


def gmm(x: torch.Tensor, k: int, seed: int):
    """Means of a Gaussian mixture (scikit-learn, diagonal covariances, k-means++ seeding,
    EM) fitted on a subsample of ``SUBSAMPLE`` embeddings; counts: weights times the
    subsample's size."""
    from sklearn.mixture import GaussianMixture

    sample = subsample(x, k, seed)
    fit = GaussianMixture(k, covariance_type="diag", init_params="k-means++", max_iter=GMM_MAX_ITER,
                          random_state=seed).fit(sample)
    return on_device_of(x, torch.from_numpy(fit.means_), torch.from_numpy(fit.weights_ * len(sample)))


def ward(x: torch.Tensor, k: int, seed: int):
    """Centroids of Ward agglomerative clustering (scikit-learn) of a subsample of
    ``SUBSAMPLE`` embeddings (its distance matrix grows as the square of the points);
    counts: cluster sizes."""
    from sklearn.cluster import AgglomerativeClustering

    sample = subsample(x, k, seed)
    labels = torch.from_numpy(AgglomerativeClustering(k, linkage="ward").fit_predict(sample)).long()
    counts = torch.bincount(labels, minlength=k).double()
    sums = torch.zeros(k, sample.shape[1], dtype=torch.float64).index_add_(0, labels, torch.from_numpy(sample))
    return on_device_of(x, sums / counts[:, None], counts)


def farthest_point(x: torch.Tensor, k: int, seed: int):
    """Farthest-point (max-min) traversal: a random first embedding, then each next token
    the embedding farthest from every token chosen so far (ties: the first)."""
    if x.shape[0] < k:
        raise ValueError(f"k={k} tokens need at least {k} embeddings; got {x.shape[0]}")
    x = x.detach().float()
    chosen = [int(torch.randint(x.shape[0], (1,), generator=generator(seed)))]
    closest = (x - x[chosen[0]]).pow(2).sum(1)
    for _ in range(k - 1):
        chosen.append(int(torch.argmax(closest)))
        torch.minimum(closest, (x - x[chosen[-1]]).pow(2).sum(1), out=closest)
    return on_device_of(x, x[torch.tensor(chosen, device=x.device)])


INITIALISERS = {
    "normal": normal,
    "uniform": uniform,
    "kaiming_uniform": kaiming_uniform,
    "embedding_normal": embedding_normal,
    "embedding_box": embedding_box,
    "embedding_sample": embedding_sample,
    "kmeans++": kmeans_pp,
    "kmeans": kmeans_lloyd,
    "gmm": gmm,
    "ward": ward,
    "farthest_point": farthest_point,
}
METHODS = tuple(INITIALISERS)
WITHOUT_ENCODER = ("normal", "uniform", "kaiming_uniform")


def initial_codebook(method: str, x: torch.Tensor, k: int, seed: int, kmeans_iters: int = 20):
    """``(tokens (k, D), counts or None)`` by ``method`` (one of :data:`METHODS`) from the
    embeddings sample ``x`` (N, D); ``kmeans_iters`` Lloyd iterations for ``kmeans``."""
    if method not in INITIALISERS:
        raise ValueError(f"codebook_init={method!r} is invalid: must be one of {list(METHODS)}")
    x = x.detach().reshape(-1, x.shape[-1])
    if method == "kmeans":
        return kmeans_lloyd(x, k, seed, iters=kmeans_iters)
    return INITIALISERS[method](x, k, seed)
