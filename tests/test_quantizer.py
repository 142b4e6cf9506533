import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vqstudy import quantizer
from vqstudy.quantizer import VectorQuantizer, kmeans, kmeans_plus_plus, nearest_token


def test_nearest_token_matches_cdist_argmin_across_chunks():
    g = torch.Generator().manual_seed(0)
    z, codebook = torch.randn(1000, 8, generator=g), torch.randn(300, 8, generator=g)
    expected = torch.cdist(z, codebook).argmin(1)
    # a tiny chunk forces many chunks, including a ragged last one
    assert torch.equal(nearest_token(z, codebook, max_chunk_elements=300 * 7), expected)
    assert torch.equal(nearest_token(z, codebook), expected)


@pytest.mark.parametrize("n, k, d, max_chunk", [
    (1, 1, 3, 1 << 20),          # one row, one token
    (7, 5, 2, 1 << 20),          # K below one group of the two-stage argmin (padded)
    (333, 4099, 8, 1 << 20),     # several tiles of tokens, K not a multiple of the group
    (2000, 300, 16, 100),        # a chunk smaller than one tile row: one row per block
    (4096, 1000, 64, 1 << 16),   # many blocks of rows, a ragged last one
])
def test_tiled_search_equals_plain_argmin(n, k, d, max_chunk):
    g = torch.Generator().manual_seed(n + k)
    z, codebook = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    expected = torch.cdist(z, codebook).argmin(1)
    found = quantizer.nearest_token_grouped(z, codebook, max_chunk, quantizer.GROUP)
    assert found.dtype == torch.long and found.shape == (n,)
    assert torch.equal(found, expected)
    # the public entry (which picks its path by size) and the accelerator path agree
    assert torch.equal(nearest_token(z, codebook, max_chunk_elements=max_chunk), expected)
    assert torch.equal(quantizer.nearest_token_plain(z, codebook, max_chunk), expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_search_is_exact_on_any_thread_count(threads):
    """The search runs on the caller's torch threads (K-means may be given several)."""
    g = torch.Generator().manual_seed(11)
    z, codebook = torch.randn(5000, 16, generator=g), torch.randn(3000, 16, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        found = nearest_token(z, codebook)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(found, torch.cdist(z, codebook).argmin(1))


@pytest.mark.parametrize("n, k, path", [(256, 512, "tiled"), (255, 4096, "plain"), (4096, 511, "plain")])
def test_public_entry_takes_the_tiled_path_only_where_it_pays(n, k, path, monkeypatch):
    taken = []
    for name in ("nearest_token_grouped", "nearest_token_plain"):
        real = getattr(quantizer, name)
        monkeypatch.setattr(quantizer, name, lambda *a, real=real, name=name, **kw: taken.append(name) or real(*a, **kw))
    g = torch.Generator().manual_seed(n + k)
    z, codebook = torch.randn(n, 16, generator=g), torch.randn(k, 16, generator=g)
    assert torch.equal(nearest_token(z, codebook), torch.cdist(z, codebook).argmin(1))
    assert taken == [f"nearest_token_{'grouped' if path == 'tiled' else 'plain'}"]


def test_ties_go_to_the_lowest_index_like_argmin():
    # exact ties: integer coordinates make every distance exact in float32
    g = torch.Generator().manual_seed(5)
    base = torch.randint(-3, 4, (40, 4), generator=g).float()
    codebook = torch.cat([base, base, base])          # every token three times, tiles apart
    z = torch.randint(-3, 4, (500, 4), generator=g).float()
    plain = quantizer.nearest_token_plain(z, codebook)
    for max_chunk in (1 << 20, 64, 16):  # one tile; tiles of 16..64
        found = quantizer.nearest_token_grouped(z, codebook, max_chunk, quantizer.GROUP)
        assert torch.equal(found, plain)
        assert (found < 40).all()                     # the first copy wins
    # equidistant tokens: all at distance 1 from the origin
    ring = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]).repeat(10, 1)
    assert nearest_token(torch.zeros(3, 2), ring).tolist() == [0, 0, 0]
    assert quantizer.nearest_token_grouped(torch.zeros(3, 2), ring).tolist() == [0, 0, 0]


def test_tiles_never_exceed_the_chunk_budget():
    for n, k, budget in [(8192, 65536, 1 << 20), (10, 100000, 1 << 20), (5000, 300, 2100), (50, 7, 10)]:
        rows, tokens = quantizer.tile_shape(n, k, budget, quantizer.GROUP)
        assert 1 <= rows <= n and tokens % quantizer.GROUP == 0
        assert rows * tokens <= max(budget, quantizer.GROUP)


def test_grouped_layout_puts_group_members_a_width_apart():
    codebook = torch.arange(40.0)[:, None].repeat(1, 2)  # token i is (i, i); K=40 -> padded to 48
    tokens, norms = quantizer.grouped_layout(codebook, tile=32, group=16)
    assert tokens.shape == (48, 2)
    # first tile: 32 tokens, width 2: position g * 2 + j holds token j * 16 + g
    assert tokens[:32, 0].tolist() == [j * 16 + g for g in range(16) for j in range(2)]
    assert tokens[32:40, 0].tolist() == list(range(32, 40)) and (norms[40:] == float("inf")).all()


def test_quantizer_changes_no_process_wide_setting():
    """Importing the module and running it leaves torch's thread count and glibc's
    allocator settings as they were (a fresh interpreter, so that the import is real)."""
    probe = """
import ctypes, torch
torch.set_num_threads(2)
libc = ctypes.CDLL("libc.so.6")
from vqstudy import quantizer
z = torch.randn(3000, 8).requires_grad_()
quantizer.kmeans(z.detach(), 20, iters=2)
vq = quantizer.VectorQuantizer(500, 8).train()
vq(z)[2].backward()
assert torch.get_num_threads() == 2, torch.get_num_threads()
"""
    source = Path(quantizer.__file__).read_text()
    assert "mallopt" not in source and "set_num_threads" not in source and "register_at_fork" not in source
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=Path(quantizer.__file__).parents[1])


def test_quantizer_outputs_the_nearest_token():
    vq = VectorQuantizer(3, 2).eval()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    z = torch.tensor([[9.0, 1.0], [1.0, 8.0], [0.5, -0.5]])
    z_q, idx, _ = vq(z)
    assert idx.tolist() == [1, 2, 0]
    assert torch.allclose(z_q, vq.codebook[idx])


def test_straight_through_passes_gradient_to_the_encoder():
    encoder = torch.nn.Linear(4, 2)
    vq = VectorQuantizer(5, 2).eval()
    z = encoder(torch.randn(16, 4))
    z_q, _, commitment = vq(z)
    (z_q.pow(2).sum()).backward()  # the quantizer's argmin has no gradient; STE copies it
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    # the gradient w.r.t. z equals the gradient w.r.t. z_q (identity through the STE)
    encoder.zero_grad()
    z = encoder(torch.randn(16, 4)).detach().requires_grad_()
    z_q, _, _ = vq(z)
    z_q.pow(2).sum().backward()
    assert torch.allclose(z.grad, 2 * z_q.detach())
    assert commitment.requires_grad


@pytest.mark.parametrize("shape", [(300, 16), (4, 8, 8, 6), (4, 64, 8, 8)])
def test_quantizer_step_equals_the_autograd_expression(shape):
    """Output, commitment loss and encoder gradient against autograd on
    ``z + (q - z).detach()`` and ``F.mse_loss(z, q)``, q the plain argmin's tokens; the
    last shape is a channels-first latent permuted to channels-last (not contiguous),
    with enough rows and tokens for the tiled search."""
    g = torch.Generator().manual_seed(8)
    d = shape[-1] if shape[1] != 64 else 64
    x = torch.randn(*shape, generator=g)
    w = torch.randn(d, d, generator=g, requires_grad=True)  # z as an encoder's output
    encode = (lambda: (x.permute(0, 2, 3, 1) @ w)) if shape[1] == 64 else (lambda: x @ w)
    vq = VectorQuantizer(700, d).eval()
    vq.codebook.copy_(torch.randn(700, d, generator=g))
    upstream = torch.randn(encode().shape, generator=g)

    z = encode()
    q = vq.codebook[torch.cdist(z.detach().reshape(-1, d), vq.codebook).argmin(1)].view_as(z)
    reference = (z + (q - z).detach(), torch.nn.functional.mse_loss(z, q))
    ((reference[0] * upstream).sum() + 0.25 * reference[1]).backward()
    expected_grad, w.grad = w.grad.clone(), None

    z = encode()
    z_q, _, commitment = vq(z)
    ((z_q * upstream).sum() + 0.25 * commitment).backward()
    assert torch.equal(z_q, q)  # the token itself, not z + (q - z) with its rounding
    assert torch.allclose(z_q, reference[0], atol=1e-6)
    assert commitment.item() == pytest.approx(reference[1].item(), rel=1e-5)
    assert torch.allclose(w.grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_commitment_loss_is_distance_to_token_and_does_not_touch_codebook():
    vq = VectorQuantizer(1, 2).eval()
    vq.codebook.zero_()
    z = torch.tensor([[3.0, 4.0]], requires_grad=True)
    _, _, commitment = vq(z)
    assert commitment.item() == pytest.approx(12.5)  # mean of (9, 16)
    commitment.backward()
    assert torch.allclose(z.grad, torch.tensor([[3.0, 4.0]]))


def test_ema_step_moves_used_token_toward_mean_of_its_embeddings():
    vq = VectorQuantizer(2, 2, decay=0.9)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0]]))
    vq.ema_count.fill_(1.0)
    vq.ema_sum.copy_(vq.codebook * 1.0)
    z = torch.tensor([[2.0, 0.0], [4.0, 0.0], [3.0, 3.0]])  # all nearest to token 0, mean (3, 1)
    before = vq.codebook.clone()
    vq.train()(z)
    mean = z.mean(0)
    assert torch.dist(vq.codebook[0], mean) < torch.dist(before[0], mean)
    # exact EMA with Laplace smoothing
    count = 0.9 * 1 + 0.1 * 3
    total = count + 0.9 * 1
    smoothed = (count + 1e-5) / (total + 2e-5) * total
    expected = (0.9 * before[0] + 0.1 * z.sum(0)) / smoothed
    assert torch.allclose(vq.codebook[0], expected, atol=1e-5)
    # an unused token stays (almost) where it was
    assert torch.allclose(vq.codebook[1], before[1], rtol=1e-3)


def test_ema_update_equals_one_hot_reference():
    g = torch.Generator().manual_seed(1)
    vq = VectorQuantizer(7, 3, decay=0.95)
    vq.codebook.copy_(torch.randn(7, 3, generator=g))
    vq.ema_count.copy_(torch.rand(7, generator=g) + 0.5)
    vq.ema_sum.copy_(vq.codebook * vq.ema_count[:, None])
    z = torch.randn(50, 3, generator=g)
    count0, sum0 = vq.ema_count.clone(), vq.ema_sum.clone()
    idx = torch.cdist(z, vq.codebook).argmin(1)
    onehot = torch.nn.functional.one_hot(idx, 7).float()
    count = 0.95 * count0 + 0.05 * onehot.sum(0)
    sums = 0.95 * sum0 + 0.05 * onehot.t() @ z
    n = count.sum()
    expected = sums / ((count + 1e-5) / (n + 7e-5) * n)[:, None]
    vq.train()(z)
    assert torch.allclose(vq.codebook, expected, atol=1e-5)


def subnormal(x: torch.Tensor) -> torch.Tensor:
    return (x != 0) & (x.abs() < torch.finfo(x.dtype).tiny)


def test_tokens_never_chosen_leave_no_subnormal_entry_after_many_ema_steps():
    """Issue 27: at decay 0.99 a never-chosen token's statistics fall below the smallest
    normal float after about 8700 steps; subnormals there made long runs 36x slower."""
    g = torch.Generator().manual_seed(3)
    k, d, used = 64, 4, 8
    vq = VectorQuantizer(k, d, decay=0.99)
    vq.set_codebook(torch.randn(k, d, generator=g), vectors_per_batch=32)
    flat = torch.randn(32, d, generator=g)
    idx = torch.arange(32) % used            # tokens 8..63 are never chosen
    for _ in range(10_000):
        vq.ema_update(flat, idx)
    for name in ("codebook", "ema_sum", "ema_count"):
        assert not subnormal(getattr(vq, name)).any(), f"{name} holds subnormal numbers"
    assert torch.all(vq.ema_count[used:] == 0) and torch.all(vq.codebook[used:] == 0)  # flushed, not clamped
    assert torch.all(vq.ema_count[:used] > 0.5)   # the tokens in use are untouched


def test_flush_subnormal_zeroes_only_what_is_below_the_smallest_normal_float():
    tiny = torch.finfo(torch.float32).tiny
    x = torch.tensor([tiny, -tiny, tiny / 2, -tiny / 4, 1e-45, 0.0, 1.0, -3e-30])
    assert subnormal(x).sum() == 3
    quantizer.flush_subnormal_(x)
    assert x.tolist() == torch.tensor([tiny, -tiny, 0, 0, 0, 0, 1.0, -3e-30]).tolist()


def test_ema_update_equals_one_hot_reference_over_many_tiles():
    g = torch.Generator().manual_seed(2)
    k, d = 3000, 4                          # two tiles of tokens, many blocks of rows
    vq = VectorQuantizer(k, d, decay=0.9)
    vq.codebook.copy_(torch.randn(k, d, generator=g))
    vq.ema_count.copy_(torch.rand(k, generator=g) + 0.5)
    vq.ema_sum.copy_(vq.codebook * vq.ema_count[:, None])
    z = torch.randn(8, 64, d, generator=g)  # (batch, positions, D) as the models give it
    count0, sum0 = vq.ema_count.clone(), vq.ema_sum.clone()
    flat = z.reshape(-1, d)
    idx = torch.cdist(flat, vq.codebook).argmin(1)
    onehot = torch.nn.functional.one_hot(idx, k).float()
    count = 0.9 * count0 + 0.1 * onehot.sum(0)
    sums = 0.9 * sum0 + 0.1 * onehot.t() @ flat
    n = count.sum()
    expected = sums / ((count + 1e-5) / (n + k * 1e-5) * n)[:, None]
    _, found, _ = vq.train()(z)
    assert torch.equal(found, idx.view(8, 64))
    assert torch.allclose(vq.codebook, expected, atol=1e-5)


def test_kmeans_recovers_centres_of_separated_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    x = (centres[:, None] + 0.5 * torch.randn(4, 200, 2, generator=g)).reshape(-1, 2)
    found, counts = kmeans(x, 4, iters=20, seed=0)
    # match each true centre to its nearest found centre
    d = torch.cdist(centres, found)
    assert sorted(d.argmin(1).tolist()) == [0, 1, 2, 3]
    assert d.min(1).values.max() < 0.2
    assert counts.tolist() == [200.0] * 4


def test_kmeans_inertia_matches_scikit_learn_on_small_data():
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 4, generator=g)
    init = x[:16].clone()
    ours, _ = kmeans(x, 16, iters=50, init=init)
    sk = KMeans(16, init=init.numpy(), n_init=1, max_iter=50, algorithm="lloyd", tol=0).fit(x.numpy())
    inertia = torch.cdist(x, ours).min(1).values.pow(2).sum().item()
    assert inertia == pytest.approx(sk.inertia_, rel=1e-3)


def test_kmeans_from_given_centres_equals_reference_lloyd():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3000, 8, generator=g)
    init = x[:100].clone()
    centres = init.clone()
    for _ in range(10):  # plain Lloyd: cdist argmin, one-hot means, empty clusters stay
        onehot = torch.nn.functional.one_hot(torch.cdist(x, centres).argmin(1), 100).float()
        counts = onehot.sum(0)
        centres = torch.where(counts[:, None] > 0, onehot.t() @ x / counts.clamp(min=1)[:, None], centres)
    found, found_counts = kmeans(x, 100, iters=10, init=init)
    assert torch.allclose(found, centres, atol=1e-5)
    assert torch.equal(found_counts, torch.bincount(torch.cdist(x, found).argmin(1), minlength=100).float())


def test_kmeans_inertia_matches_scikit_learn_with_many_clusters():
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(6)
    x = torch.randn(4000, 16, generator=g)
    init = x[torch.randperm(4000, generator=g)[:256]].clone()
    ours, _ = kmeans(x, 256, iters=15, init=init)
    sk = KMeans(256, init=init.numpy(), n_init=1, max_iter=15, algorithm="lloyd", tol=0).fit(x.numpy())
    inertia = torch.cdist(x, ours).min(1).values.pow(2).sum().item()
    sk_inertia = torch.cdist(x, torch.from_numpy(sk.cluster_centers_)).min(1).values.pow(2).sum().item()
    assert inertia == pytest.approx(sk_inertia, rel=1e-3)


def kmeans_plus_plus_probabilities(points: list[float], k: int) -> dict:
    """Exact probability of every ordered choice of k centres by k-means++ (1-D points)."""
    probs = {}
    for order in itertools.permutations(range(len(points)), k):
        p = 1 / len(points)
        for i in range(1, k):
            weights = [min((x - points[c]) ** 2 for c in order[:i]) for x in points]
            p *= weights[order[i]] / sum(weights)
        probs[order] = p
    return probs


@pytest.mark.parametrize("batch", [1, 256])  # one proposal per refresh (plain k-means++); lazy batches
def test_kmeans_plus_plus_draws_with_the_k_means_plus_plus_probabilities(monkeypatch, batch):
    monkeypatch.setattr(quantizer, "KMEANS_PP_BATCH", batch)
    points = [0.0, 1.0, 3.0, 7.0]
    exact = kmeans_plus_plus_probabilities(points, 3)
    x = torch.tensor(points)[:, None]
    runs = 1500
    seen = dict.fromkeys(exact, 0)
    for seed in range(runs):
        centres = kmeans_plus_plus(x, 3, torch.Generator().manual_seed(seed))[:, 0].tolist()
        seen[tuple(points.index(c) for c in centres)] += 1  # KeyError on a repeated point
    chi2 = sum((seen[o] - runs * p) ** 2 / (runs * p) for o, p in exact.items())
    assert chi2 < 60  # 23 degrees of freedom: the 99.99th percentile is about 56


def test_kmeans_plus_plus_never_repeats_a_point_while_distinct_ones_remain():
    g = torch.Generator().manual_seed(7)
    distinct = torch.randn(40, 3, generator=g)
    x = distinct.repeat(5, 1)  # every point five times
    centres = kmeans_plus_plus(x, 40, torch.Generator().manual_seed(0))
    assert (centres[:, None] == distinct[None]).all(-1).any(1).all()  # data points, exactly
    assert len({tuple(c) for c in centres.tolist()}) == 40
    more = kmeans_plus_plus(x, 45, torch.Generator().manual_seed(0))  # fewer distinct points than k
    assert more.shape == (45, 3) and len({tuple(c) for c in more.tolist()}) == 40


def test_kmeans_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be positive"):
        kmeans(torch.randn(10, 2), 0)
    with pytest.raises(ValueError, match="at least k=20"):
        kmeans(torch.randn(10, 2), 20)
