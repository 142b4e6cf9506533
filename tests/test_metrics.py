import pytest
import torch

from vqstudy import metrics


def test_perplexity_is_k_for_uniform_use_and_1_for_a_single_token():
    assert metrics.perplexity(torch.full((64,), 10)) == pytest.approx(64.0)
    single = torch.zeros(64, dtype=torch.long)
    single[5] = 1000
    assert metrics.perplexity(single) == pytest.approx(1.0)
    assert 1.0 < metrics.perplexity(torch.tensor([90, 10, 0, 0])) < 2.0


def test_usage_and_dead_tokens():
    counts = torch.tensor([3, 0, 1, 0])
    assert metrics.usage(counts) == 0.5
    assert metrics.dead_tokens(counts) == 2
    assert metrics.token_counts(torch.tensor([[0, 2], [2, 2]]), 4).tolist() == [1, 0, 3, 0]


def test_codebook_spread_small_when_tokens_sit_in_a_corner():
    g = torch.Generator().manual_seed(0)
    embeddings = 10 * torch.randn(1000, 2, generator=g)
    narrow = 0.1 * torch.randn(50, 2, generator=g)
    assert metrics.codebook_spread(narrow, embeddings) < 0.01
    assert metrics.codebook_spread(embeddings[:500], embeddings) == pytest.approx(1.0, rel=0.2)


def test_class_coverage_assigns_each_token_to_its_majority_class():
    indices = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    labels = torch.tensor([1, 1, 0, 0, 0, 0, 2, 2])
    cov = metrics.class_coverage(indices, labels, num_tokens=4, n_classes=4)
    assert cov["tokens_per_class"] == [1, 1, 1, 0]  # token 0 -> class 1, 1 -> 0, 2 -> 2
    assert cov["classes_covered"] == 3
    assert cov["min_tokens_per_class"] == 0
