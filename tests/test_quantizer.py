import pytest
import torch

from vqstudy.quantizer import VectorQuantizer, kmeans, nearest_token


def test_nearest_token_matches_cdist_argmin_across_chunks():
    g = torch.Generator().manual_seed(0)
    z, codebook = torch.randn(1000, 8, generator=g), torch.randn(300, 8, generator=g)
    expected = torch.cdist(z, codebook).argmin(1)
    # a tiny chunk forces many chunks, including a ragged last one
    assert torch.equal(nearest_token(z, codebook, max_chunk_elements=300 * 7), expected)
    assert torch.equal(nearest_token(z, codebook), expected)


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


def test_kmeans_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be positive"):
        kmeans(torch.randn(10, 2), 0)
    with pytest.raises(ValueError, match="at least k=20"):
        kmeans(torch.randn(10, 2), 20)
