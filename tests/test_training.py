import dataclasses

import pytest
import torch

from vqstudy.data import gaussian_mixture, split_per_class
from vqstudy.training import Config, train

TINY = dict(n_train_per_class=60, n_eval_per_class=20, total_steps=80, pretrain_steps=40, batch_size=64,
            codebook_size=16, kmeans_iters=5, keep_embeddings=100)


def test_gaussian_mixture_is_seeded_balanced_and_separated():
    x, y = gaussian_mixture(n_per_class=100, dim=16, seed=3)
    x2, _ = gaussian_mixture(n_per_class=100, dim=16, seed=3)
    assert torch.equal(x, x2) and x.shape == (1000, 16)
    assert torch.bincount(y).tolist() == [100] * 10
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    assert torch.pdist(means).min() > 5 * x[y == 0].std(0).mean()
    (tx, ty), (ex, ey) = split_per_class(x, y, 10, 70)
    assert torch.bincount(ty).tolist() == [70] * 10 and torch.bincount(ey).tolist() == [30] * 10


@pytest.mark.parametrize("regime", ["baseline", "pretrain"])
def test_both_regimes_run_end_to_end(regime):
    r = train(Config(regime=regime, **TINY))
    m = r["metrics"]
    assert 1.0 <= m["perplexity"] <= 16 and 0 < m["usage"] <= 1
    assert m["dead_tokens"] == round(16 * (1 - m["usage"]))
    assert r["final"]["tokens"].shape == (16, 2) and r["init"]["embeddings"].shape == (100, 2)
    assert int(r["final"]["counts"].sum()) == 200  # every evaluation embedding counted once
    phases = r["history"]["phase"]
    assert phases.count("vq") + phases.count("autoencoder") == len(range(0, 80, 10))


def test_pretrain_really_trains_the_autoencoder_before_quantizing():
    longer = {**TINY, "total_steps": 300, "pretrain_steps": 200}
    base = train(Config(regime="baseline", **longer))
    pre = train(Config(regime="pretrain", **longer))
    # before quantization starts, pretrain's continuous autoencoder is much better ...
    assert pre["autoencoder_mse_at_vq_init"] < 0.5 * base["autoencoder_mse_at_vq_init"]
    # ... its first 200 steps are autoencoder steps, and both regimes take 300 steps in all
    assert pre["history"]["phase"] == ["autoencoder"] * 20 + ["vq"] * 10
    assert base["history"]["phase"] == ["vq"] * 30
    assert pre["history"]["step"] == base["history"]["step"] == list(range(0, 300, 10))


def test_same_seed_same_initial_weights_and_identical_metrics():
    a = train(Config(regime="baseline", **TINY))
    b = train(Config(regime="baseline", **TINY))
    assert a["metrics"] == b["metrics"]
    pre = train(Config(regime="pretrain", **TINY))
    # baseline's codebook comes from the untrained encoder: same seed -> same weights;
    # pretrain's initial embeddings differ because the encoder has trained
    assert not torch.equal(pre["init"]["embeddings"], a["init"]["embeddings"])


@pytest.mark.parametrize("field, value, message", [
    ("codebook_size", 0, "codebook_size=0"),
    ("regime", "warmup", "regime='warmup'"),
    ("total_steps", -5, "total_steps=-5"),
    ("hidden", 0, "hidden=0"),
])
def test_bad_config_value_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        Config(**{field: value}).validate()
    with pytest.raises(ValueError, match=message):
        train(Config(**{**TINY, field: value}))


def test_pretrain_steps_must_leave_room_for_quantized_training():
    with pytest.raises(ValueError, match="pretrain_steps=80"):
        Config(regime="pretrain", total_steps=80, pretrain_steps=80).validate()


def test_from_dict_rejects_unknown_fields():
    fields = {f.name for f in dataclasses.fields(Config)}
    assert "codebook_size" in fields
    with pytest.raises(ValueError, match="codebok_size"):
        Config.from_dict({"codebok_size": 8})


def test_shared_pretraining_gives_identical_results():
    from vqstudy import training

    training._PRETRAINED.clear()
    cfg = Config(regime="pretrain", **TINY)
    fresh = train(cfg)
    assert len(training._PRETRAINED) == 1
    reused = train(cfg)  # pretraining restored from memory, not recomputed
    assert reused["metrics"] == fresh["metrics"] and reused["history"] == fresh["history"]
    other_k = train(cfg.replace(codebook_size=8))  # a different K shares the same pretraining
    training._PRETRAINED.clear()
    assert other_k["metrics"] == train(cfg.replace(codebook_size=8))["metrics"]
