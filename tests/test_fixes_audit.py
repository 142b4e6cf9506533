"""vqstudy.fixes_audit: the numbers the fixes chapter's "Three settings examined" states,
on hand-made curves and runs, and the library's dead-code reset replayed where the answer
is known (no token below the threshold; every token below it, more than the batch can
replace)."""

import math

import pytest
import torch

from vqstudy import adapters, fixes_audit


def curves(points: list[tuple]) -> dict:
    """Training curves from (step, phase, mse, usage, dead_tokens) rows."""
    names = ("step", "phase", "mse", "usage", "dead_tokens")
    out = {n: [p[i] for p in points] for i, n in enumerate(names)}
    out["loss"] = [math.nan] * len(points)
    out["perplexity"] = [math.nan] * len(points)
    return out


PRETRAINED = curves([(10, "autoencoder", 0.1, math.nan, math.nan), (20, "autoencoder", 0.05, math.nan, math.nan),
                     (20, "vq", 0.9, 1.0, 0), (30, "vq", 0.4, 0.5, 8), (40, "vq", 0.3, 0.25, 12),
                     (50, "vq", 1.7, 0.375, 10), (60, "vq", 1.2, 0.375, 10)])


def test_curve_summary_reads_only_the_quantized_steps():
    s = fixes_audit.curve_summary(PRETRAINED)
    assert (s["start_step"], s["mse_start"], s["usage_start"]) == (20, 0.9, 1.0)
    assert (s["next_step"], s["usage_next"], s["dead_next"]) == (30, 0.5, 8)
    assert (s["mse_low"], s["mse_low_step"], s["mse_high_after_low"]) == (0.3, 40, 1.7)
    assert (s["usage_low"], s["usage_low_step"]) == (0.25, 40)
    assert (s["mse_end"], s["usage_end"], s["dead_end"]) == (1.2, 0.375, 10)


def test_curve_summary_the_highest_mse_is_after_the_lowest_and_nan_without_quantized_points():
    falling = curves([(0, "vq", 5.0, 0.1, 9), (10, "vq", 2.0, 0.2, 8), (20, "vq", 1.0, 0.3, 7)])
    s = fixes_audit.curve_summary(falling)
    assert s["mse_high_after_low"] == 1.0 and s["mse_low_step"] == 20  # the start's 5.0 is before the lowest
    empty = fixes_audit.curve_summary(curves([(10, "autoencoder", 0.1, math.nan, math.nan)]))
    assert all(math.isnan(v) for v in empty.values())


def result(quantizer="lfq", regime="baseline", variance=(0.5, 40.0), spread=(1.2, 0.1), usage=(1.0, 0.2)):
    return {"config": {"data": "gaussian_mixture", "codebook_size": 8, "latent_dim": 2, "seed": 3,
                       "quantizer": quantizer, "regime": regime},
            "init_metrics": {"usage": usage[0], "codebook_spread": spread[0], "embedding_variance": variance[0]},
            "metrics": {"usage": usage[1], "codebook_spread": spread[1], "embedding_variance": variance[1], "mse": 0.7},
            "curves": PRETRAINED}


def test_run_rows_one_row_per_run_with_the_growth_of_the_encoders_outputs():
    rows = fixes_audit.run_rows([{"method": "lfq"}, {"method": "pretrain+vq"}],
                                [result(), result("vq", "pretrain", variance=(2.0, 1.0))])
    assert rows.method.tolist() == ["lfq", "pretrain+vq"]
    assert rows.variance_growth.tolist() == [80.0, 0.5]
    first = rows.iloc[0]
    assert (first.K, first.D, first.seed, first.quantizer, first.usage_init, first.usage) == (8, 2, 3, "lfq", 1.0, 0.2)
    assert (first.spread_init, first.spread, first.mse, first.mse_low) == (1.2, 0.1, 0.7, 0.3)


def test_the_threshold_against_the_uses_a_token_gets_per_batch():
    assert fixes_audit.uses_per_batch(256, 512) == 0.5                # C1: a batch of 256 latents, K = 512
    assert fixes_audit.threshold_relative(2, 256, 512) == 4.0
    assert fixes_audit.threshold_relative(2, 64 * 64, 512) == 0.25    # CIFAR-10: 64 images of 8 x 8 latents
    assert fixes_audit.most_tokens_above(2, 256, 512) == 128          # their uses add up to the batch
    assert fixes_audit.most_tokens_above(2, 64 * 64, 512) == 512      # never more than K
    assert fixes_audit.most_tokens_above(3, 10, 100) == 3


def test_share_below_rescales_the_counts_to_one_batch_and_is_strict_at_the_threshold():
    assert fixes_audit.share_below([8, 0, 0, 0], 4, 2) == 0.75        # per batch: 4, 0, 0, 0
    assert fixes_audit.share_below([1, 1, 1, 1], 8, 2) == 0.0         # each exactly 2: not below
    assert fixes_audit.share_below([1, 1, 1, 1], 7, 2) == 1.0
    assert fixes_audit.share_below(torch.tensor([30, 10]), 8, 2.5) == 0.5


def clusters(k: int, per: int, seed: int = 0):
    """``k`` tight, well-separated 2-D clusters of ``per`` points each, and their centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.stack([torch.tensor([10.0 * i, -5.0 * i]) for i in range(k)])
    points = (centres[:, None, :] + 0.01 * torch.randn(k, per, 2, generator=g)).reshape(-1, 2)
    return points, centres


def test_replay_resets_nothing_when_every_token_is_chosen_more_often_than_the_threshold():
    points, centres = clusters(4, 50)
    out = fixes_audit.replay_resets(points, centres, torch.full((4,), 50.0), latents_per_batch=64, steps=20)
    assert out["threshold"] == adapters.DEAD_CODE_DEFAULT  # the runs' default setting
    assert fixes_audit.replay_resets(points, centres, torch.full((4,), 50.0), latents_per_batch=64, steps=2,
                                     dead_code_threshold=0.5)["threshold"] == 0.5
    assert out["expired"] == [0] * 20 and out["replaced"] == [0] * 20
    assert out["replaced_once"] == 0.0 and out["usage"] == 1.0


def test_replay_resets_at_most_one_token_per_latent_of_the_batch():
    """K = 512 tokens, 256 latents a batch (C1's 0.5 uses a token): nearly every token is
    below a threshold of 2 and the module replaces exactly one per latent, every step."""
    g = torch.Generator().manual_seed(1)
    points, tokens = torch.randn(2000, 2, generator=g), torch.randn(512, 2, generator=g)
    out = fixes_audit.replay_resets(points, tokens, torch.ones(512), latents_per_batch=256, steps=10, seed=1)
    assert all(e > 256 for e in out["expired"])
    assert out["replaced"] == [256] * 10
    assert out["replaced_once"] > 0.9


def test_replay_resets_none_without_a_threshold():
    g = torch.Generator().manual_seed(2)
    points, tokens = torch.randn(500, 2, generator=g), torch.randn(64, 2, generator=g)
    out = fixes_audit.replay_resets(points, tokens, torch.ones(64), latents_per_batch=32, steps=5, quantizer="lib_vq")
    assert out["threshold"] == 0 and out["replaced"] == [0] * 5 and out["replaced_once"] == 0.0


def test_replay_leaves_the_global_random_state_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    points, centres = clusters(4, 50)
    fixes_audit.replay_resets(points, centres, torch.ones(4), latents_per_batch=64, steps=3)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("x, text", [(0.1234, "×0.12"), (0.5, "×0.50"), (1.44, "×1.4"), (21.4, "×21"),
                                     (2100.0, "×2100"), (2.94e12, "×2.9×10¹²"), (9.97e12, "×1.0×10¹³"),
                                     (1e5, "×1.0×10⁵"),
                                     (float("nan"), "—"), (0.0, "—"), (-2.0, "—")])
def test_factor(x, text):
    assert fixes_audit.factor(x) == text
