"""The codebook initialisers (vqstudy.inits): shapes, determinism by seed, and the
property that defines each one; their wiring into the quantizer and the training config."""

import pytest
import torch

from vqstudy import inits
from vqstudy.quantizer import VectorQuantizer, kmeans
from vqstudy.training import Config, InvalidConfig, train

RANDOM = [m for m in inits.METHODS if m != "kmeans"]  # kmeans is deterministic given its seed too, tested apart


def blobs(n: int = 2000, dim: int = 2, seed: int = 0) -> torch.Tensor:
    """Four well-separated Gaussian blobs, off the origin (so scale-free inits differ from them)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[10.0, 10.0], [10.0, 20.0], [20.0, 10.0], [20.0, 20.0]])[:, :dim]
    return centres[torch.arange(n) % 4] + 0.5 * torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("method", inits.METHODS)
def test_each_initialiser_gives_k_tokens_of_the_embeddings_dimension_and_is_deterministic(method):
    x = blobs(dim=2)
    tokens, counts = inits.initial_codebook(method, x, 32, seed=3, kmeans_iters=5)
    assert tokens.shape == (32, 2) and tokens.dtype == torch.float32 and torch.isfinite(tokens).all()
    assert counts is None or (counts.shape == (32,) and (counts >= 0).all())
    again, counts_again = inits.initial_codebook(method, x, 32, seed=3, kmeans_iters=5)
    assert torch.equal(tokens, again)
    assert (counts is None) == (counts_again is None) and (counts is None or torch.equal(counts, counts_again))


@pytest.mark.parametrize("method", [m for m in RANDOM if m != "ward"])  # Ward is deterministic on a full sample
def test_a_different_seed_gives_a_different_codebook(method):
    x = blobs(n=1000)
    a, _ = inits.initial_codebook(method, x, 16, seed=0)
    b, _ = inits.initial_codebook(method, x, 16, seed=1)
    assert not torch.equal(a, b)


def test_the_data_free_initialisers_do_not_look_at_the_embeddings():
    for method in inits.WITHOUT_ENCODER:
        a, _ = inits.initial_codebook(method, blobs(), 64, seed=0)
        b, _ = inits.initial_codebook(method, torch.zeros(500, 2), 64, seed=0)
        assert torch.equal(a, b), method


def test_normal_is_standard_normal():
    tokens, counts = inits.normal(torch.zeros(10, 4), 4096, seed=0)
    assert counts is None
    assert abs(float(tokens.mean())) < 0.05 and abs(float(tokens.std()) - 1) < 0.05


def test_uniform_stays_inside_one_over_k():
    tokens, _ = inits.uniform(torch.zeros(10, 8), 256, seed=0)
    assert float(tokens.abs().max()) <= 1 / 256
    assert float(tokens.abs().max()) > 0.9 / 256  # it does reach out to its bound


def test_kaiming_uniform_matches_vector_quantize_pytorch_bound():
    k, dim = 512, 16
    tokens, _ = inits.kaiming_uniform(torch.zeros(10, dim), k, seed=0)
    bound = inits.kaiming_bound(k, dim)
    assert bound == pytest.approx((6 / (k * dim)) ** 0.5)
    assert float(tokens.abs().max()) <= bound and float(tokens.abs().max()) > 0.95 * bound
    from vector_quantize_pytorch.vector_quantize_pytorch import uniform_init

    torch.manual_seed(0)
    library = uniform_init(1, k, dim)[0]  # the library's own default codebook: same bound
    assert float(library.abs().max()) <= bound and float(library.abs().max()) > 0.95 * bound


def test_embedding_normal_has_the_embeddings_mean_and_spread():
    x = blobs(n=4000)
    tokens, _ = inits.embedding_normal(x, 4096, seed=0)
    assert torch.allclose(tokens.mean(0), x.mean(0), atol=0.3)
    assert torch.allclose(tokens.std(0), x.std(0), rtol=0.05)


def test_embedding_box_stays_in_the_bounding_box_and_fills_it():
    x = blobs()
    tokens, _ = inits.embedding_box(x, 1024, seed=0)
    low, high = x.min(0).values, x.max(0).values
    assert (tokens >= low).all() and (tokens <= high).all()
    assert ((tokens.max(0).values - tokens.min(0).values) > 0.9 * (high - low)).all()


@pytest.mark.parametrize("method", ["embedding_sample", "kmeans++", "farthest_point"])
def test_point_selections_pick_distinct_embeddings(method):
    x = blobs()
    tokens, _ = inits.initial_codebook(method, x, 64, seed=0)
    assert (tokens[:, None, :] == x[None]).all(-1).any(1).all()  # every token is one of the embeddings
    assert len(torch.unique(tokens, dim=0)) == 64


def min_pairwise_distance(tokens: torch.Tensor) -> float:
    d = torch.cdist(tokens, tokens)
    return float(d[~torch.eye(len(tokens), dtype=torch.bool)].min())


def test_farthest_point_spreads_its_tokens_further_apart_than_random_embeddings():
    x = blobs(n=3000)
    spread, _ = inits.farthest_point(x, 64, seed=0)
    for seed in range(5):
        random, _ = inits.embedding_sample(x, 64, seed=seed)
        assert min_pairwise_distance(spread) > min_pairwise_distance(random)


def test_farthest_point_starts_with_the_extremes():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.2, 0.0], [-10.0, 0.0]])
    for seed in range(5):  # whichever point it starts from, three tokens hold both extremes
        tokens, _ = inits.farthest_point(x, 3, seed=seed)
        assert {10.0, -10.0} <= {float(t[0]) for t in tokens}


def test_kmeans_is_the_quantizers_kmeans():
    x = blobs()
    tokens, counts = inits.initial_codebook("kmeans", x, 16, seed=2, kmeans_iters=7)
    expected, expected_counts = kmeans(x, 16, iters=7, seed=2)
    assert torch.equal(tokens, expected) and torch.equal(counts, expected_counts)


@pytest.mark.parametrize("method", ["gmm", "ward"])
def test_clusterings_recover_well_separated_blobs(method):
    x = blobs(n=2000)
    tokens, counts = inits.initial_codebook(method, x, 4, seed=0)
    centres = torch.tensor([[10.0, 10.0], [10.0, 20.0], [20.0, 10.0], [20.0, 20.0]])
    assert float(torch.cdist(centres, tokens).min(1).values.max()) < 0.2
    assert float(counts.sum()) == pytest.approx(2000)  # every point of the (sub)sample counted once
    assert torch.allclose(counts, torch.full((4,), 500.0), atol=5)


def test_scikit_learn_clusterings_fit_a_subsample_of_stated_size():
    x = blobs(n=inits.SUBSAMPLE + 3000)
    _, counts = inits.ward(x, 8, seed=0)
    assert float(counts.sum()) == inits.SUBSAMPLE


def test_bad_method_and_too_few_embeddings_are_named():
    with pytest.raises(ValueError, match="codebook_init='kmeans--'.*farthest_point"):
        inits.initial_codebook("kmeans--", blobs(), 8, seed=0)
    for method in ("embedding_sample", "kmeans++", "farthest_point", "gmm", "ward"):
        with pytest.raises(ValueError, match="k=64 tokens need at least 64 embeddings"):
            inits.initial_codebook(method, blobs(n=40), 64, seed=0)


def test_set_codebook_takes_given_tokens_and_rescales_counts_to_one_batch():
    vq = VectorQuantizer(8, 2)
    tokens = torch.arange(16, dtype=torch.float32).view(8, 2)
    vq.set_codebook(tokens, None, vectors_per_batch=256)
    assert torch.equal(vq.codebook, tokens)
    assert torch.allclose(vq.ema_count, torch.full((8,), 32.0))
    assert torch.allclose(vq.ema_sum, tokens * 32)
    with pytest.raises(ValueError, match=r"tokens of shape \(4, 2\) do not fit a codebook of shape \(8, 2\)"):
        vq.set_codebook(tokens[:4])


def test_set_codebook_with_kmeans_counts_is_init_codebook():
    x = blobs()
    a, b = VectorQuantizer(16, 2), VectorQuantizer(16, 2)
    a.init_codebook(x, iters=5, seed=1, vectors_per_batch=256)
    b.set_codebook(*inits.initial_codebook("kmeans", x, 16, seed=1, kmeans_iters=5), vectors_per_batch=256)
    for name in ("codebook", "ema_count", "ema_sum"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_config_names_a_bad_initialiser():
    with pytest.raises(InvalidConfig, match="codebook_init='random'.*one of"):
        Config(codebook_init="random").validate()
    assert Config(codebook_init="farthest_point").validate().codebook_init == "farthest_point"


TINY = dict(n_train_per_class=30, n_eval_per_class=10, total_steps=6, pretrain_steps=3, codebook_size=8,
            kmeans_iters=2, keep_embeddings=50, curve_points=0, curve_examples=50)


def test_training_starts_the_codebook_with_the_configured_initialiser():
    cfg = Config(codebook_init="normal", **TINY)
    r = train(cfg)
    expected, _ = inits.normal(torch.zeros(1, cfg.latent_dim), cfg.codebook_size, cfg.seed)
    assert torch.equal(r["init"]["tokens"], expected)
    assert r["config"]["codebook_init"] == "normal"
    default = train(Config(**TINY))  # the paper's K-means, on the untrained encoder's outputs
    assert not torch.equal(default["init"]["tokens"], expected)
