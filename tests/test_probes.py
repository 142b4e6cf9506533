"""The per-example probes (vqstudy.metrics: pool_positions, bag_of_tokens, linear_probe,
token_probes) on hand-made data whose answer is known, and their wiring into a run
(Config.pooled_separability, Config.token_probes)."""

import math

import pytest
import torch

from vqstudy import metrics
from vqstudy.training import Config, InvalidConfig, train


def balanced_labels(n_classes: int = 10, per_class: int = 40) -> torch.Tensor:
    return torch.arange(n_classes).repeat_interleave(per_class)


def test_tokens_that_are_the_classes_give_accuracy_1():
    labels = balanced_labels()
    tokens = labels.clone()  # one position per example: the token id is the class
    assert metrics.linear_probe(metrics.bag_of_tokens(tokens, 16), labels) == 1.0


def test_a_single_token_gives_chance():
    labels = balanced_labels()
    tokens = torch.full_like(labels, 3)
    # the probe can only predict one class; the held-out half is stratified, so 1 in 10 is right
    assert metrics.linear_probe(metrics.bag_of_tokens(tokens, 16), labels) == pytest.approx(0.1)


def test_two_tokens_per_class_still_give_accuracy_1_and_shared_tokens_lose_it():
    labels = balanced_labels()
    split = 2 * labels + torch.arange(len(labels)) % 2  # each class split over two tokens of its own
    assert metrics.linear_probe(metrics.bag_of_tokens(split, 20), labels) == 1.0
    shared = labels // 2  # classes 2c and 2c+1 share token c: at best half right
    assert metrics.linear_probe(metrics.bag_of_tokens(shared, 20), labels) == pytest.approx(0.5)


def test_bag_of_tokens_counts_each_token_of_each_example():
    indices = torch.tensor([[[0, 2], [2, 2]], [[1, 1], [1, 0]]])  # two 2x2 grids of token ids
    assert metrics.bag_of_tokens(indices, 4).tolist() == [[1, 0, 3, 0], [1, 3, 0, 0]]
    assert metrics.bag_of_tokens(torch.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]  # one-hot


def test_bag_of_tokens_rejects_an_id_outside_the_codebook():
    with pytest.raises(ValueError, match="0..3.*to 4"):
        metrics.bag_of_tokens(torch.tensor([[0, 4]]), 4)


def test_bag_of_images_with_class_specific_token_mixtures_is_read_by_the_probe():
    """CIFAR-10's case: each image is a bag of 64 tokens; no single token names the class,
    but each class draws its tokens from its own mixture."""
    g = torch.Generator().manual_seed(0)
    labels = balanced_labels(per_class=60)
    indices = (3 * labels[:, None] + torch.randint(0, 6, (len(labels), 64), generator=g)) % 32  # overlapping
    assert metrics.linear_probe(metrics.bag_of_tokens(indices, 32), labels) > 0.95


def test_pool_positions_averages_over_the_grid_and_keeps_per_example_vectors():
    z = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 2, 3)
    pooled = metrics.pool_positions(z)
    assert pooled.shape == (2, 3)
    assert torch.equal(pooled, z.reshape(2, 4, 3).mean(1))
    flat = torch.randn(5, 3)
    assert torch.equal(metrics.pool_positions(flat), flat)


def test_linear_probe_is_separabilitys_probe():
    g = torch.Generator().manual_seed(1)
    labels = balanced_labels()
    emb = torch.randn(len(labels), 4, generator=g) + 0.8 * torch.nn.functional.one_hot(labels % 4, 4)
    for seed in (0, 3):
        assert metrics.linear_probe(emb, labels, seed) == metrics.separability(emb, labels, seed)["probe_accuracy"]


def test_linear_probe_is_nan_when_there_is_nothing_to_tell_apart_and_rejects_mismatched_labels():
    assert math.isnan(metrics.linear_probe(torch.randn(40, 2), torch.zeros(40, dtype=torch.long)))
    assert math.isnan(metrics.linear_probe(torch.randn(10, 2), balanced_labels(2, 5)))
    with pytest.raises(ValueError, match="39 rows.*40"):
        metrics.linear_probe(torch.randn(39, 2), balanced_labels(2, 20))


def test_pooling_recovers_a_class_that_no_single_position_shows():
    """Per position the class is buried in noise (std 4 against a class offset of 2);
    the mean over 64 positions cuts the noise 8-fold and the classes separate."""
    g = torch.Generator().manual_seed(2)
    labels = balanced_labels(4, 100)
    means = 2.0 * torch.eye(4)
    z = means[labels][:, None, None, :] + 4.0 * torch.randn(len(labels), 8, 8, 4, generator=g)
    one_position = metrics.separability(z[:, 0, 0], labels)
    pooled = metrics.separability(metrics.pool_positions(z), labels)
    assert one_position["probe_accuracy"] < 0.5
    assert pooled["probe_accuracy"] > 0.9
    assert pooled["fisher_ratio"] > 10 * one_position["fisher_ratio"]


def test_token_probes_see_what_quantization_lost():
    """Embeddings that carry the class, quantized onto one token: the embedding probe is
    right, the token and token-vector probes are at chance."""
    g = torch.Generator().manual_seed(3)
    labels = balanced_labels()
    emb = 5.0 * torch.nn.functional.one_hot(labels, 10).float() + 0.1 * torch.randn(len(labels), 10, generator=g)
    quantized = torch.zeros_like(emb)
    tokens = torch.zeros(len(labels), dtype=torch.long)
    out = metrics.token_probes(emb, quantized, tokens, labels, num_tokens=8)
    assert out == {"probe_token_accuracy": pytest.approx(0.1), "probe_quantized_accuracy": pytest.approx(0.1),
                   "probe_embedding_accuracy": 1.0}


TINY = dict(n_train_per_class=50, n_eval_per_class=30, total_steps=20, pretrain_steps=10, kmeans_iters=3,
            codebook_size=16, curve_points=0, keep_embeddings=0)


def test_probes_are_off_by_default_and_reported_when_asked():
    plain = train(Config(**TINY))["metrics"]
    assert not any(k.startswith(("probe_", "pooled_")) for k in plain)
    asked = train(Config(**TINY, regime="pretrain", token_probes=200, pooled_separability=300))
    for metrics_ in (asked["metrics"], asked["init_metrics"]):
        assert {"probe_token_accuracy", "probe_quantized_accuracy", "probe_embedding_accuracy",
                "pooled_probe_accuracy", "pooled_fisher_ratio", "pooled_effective_rank"} <= set(metrics_)
        assert all(0.0 <= metrics_[k] <= 1.0 for k in metrics_ if k.endswith("accuracy"))
    assert asked["metrics"]["mse"] == pytest.approx(train(Config(**TINY, regime="pretrain"))["metrics"]["mse"])


def test_conv_runs_pool_each_image_over_its_8x8_grid():
    cfg = Config(data="cifar10", model="conv", hidden=4, latent_dim=4, codebook_size=8, train_subset=64,
                 eval_subset=100, total_steps=4, pretrain_steps=2, batch_size=16, kmeans_iters=2,
                 kmeans_samples=512, curve_points=0, keep_embeddings=0, pooled_separability=100, token_probes=100)
    m = train(cfg)["metrics"]
    assert 1.0 <= m["pooled_effective_rank"] <= 4.0  # one 4-d vector per image
    assert not math.isnan(m["probe_token_accuracy"])


@pytest.mark.parametrize("name", ["pooled_separability", "token_probes"])
def test_a_negative_example_count_is_refused_by_name(name):
    with pytest.raises(InvalidConfig, match=f"{name}=-1.*non-negative integer"):
        Config(**{name: -1}).validate()
