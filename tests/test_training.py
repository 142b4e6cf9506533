import copy
import dataclasses
import json
import math

import pytest
import torch

from vqstudy.data import gaussian_mixture, split_per_class
from vqstudy import training
from vqstudy.training import Config, InvalidConfig, pretrain_key, train

TINY = dict(n_train_per_class=60, n_eval_per_class=20, total_steps=80, pretrain_steps=40, batch_size=64,
            codebook_size=16, kmeans_iters=5, keep_embeddings=100, curve_points=4, curve_examples=100)


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
def test_both_regimes_run_end_to_end_and_return_what_the_chapters_read(regime):
    r = train(Config(regime=regime, **TINY))
    assert {"config", "metrics", "init_metrics", "autoencoder_mse_at_vq_init", "init", "final", "curves",
            "seconds"} <= set(r)
    assert r["config"] == dataclasses.asdict(Config(regime=regime, **TINY))
    m = r["metrics"]
    assert 1.0 <= m["perplexity"] <= 16 and 0 < m["usage"] <= 1
    assert m["dead_tokens"] == round(16 * (1 - m["usage"]))
    assert r["final"]["tokens"].shape == (16, 2) and r["init"]["embeddings"].shape == (100, 2)
    assert int(r["final"]["counts"].sum()) == 200  # every evaluation embedding counted once
    assert set(r["curves"]) == {"step", "phase", "loss", "mse", "perplexity", "usage", "dead_tokens"}
    assert len({len(v) for v in r["curves"].values()}) == 1  # one value of each per point


def test_curves_cover_the_schedule_with_the_phases_of_each_regime():
    base = train(Config(regime="baseline", **TINY))["curves"]
    pre = train(Config(regime="pretrain", **TINY))["curves"]
    # points after steps 20, 40, 60, 80, plus one where quantization starts (the codebook as K-means left it)
    assert base["step"] == [0, 20, 40, 60, 80] and base["phase"] == ["vq"] * 5
    assert pre["step"] == [20, 40, 40, 60, 80] and pre["phase"] == ["autoencoder"] * 2 + ["vq"] * 3
    assert math.isnan(base["loss"][0]) and math.isnan(pre["loss"][2])  # no training loss yet at that point
    assert all(math.isnan(p) for p in pre["perplexity"][:2])  # no codebook while the autoencoder pretrains
    assert all(not math.isnan(v) for v in pre["mse"]) and all(1 <= p <= 16 for p in base["perplexity"])
    assert pre["mse"][1] < base["mse"][2]  # at step 40 the pretrained autoencoder reconstructs better
    none = train(Config(regime="baseline", **{**TINY, "curve_points": 0}))["curves"]
    assert none["step"] == []


def test_pretrain_really_trains_the_autoencoder_before_quantizing():
    longer = {**TINY, "total_steps": 300, "pretrain_steps": 200}
    base = train(Config(regime="baseline", **longer))
    pre = train(Config(regime="pretrain", **longer))
    # before quantization starts, pretrain's continuous autoencoder is much better
    assert pre["autoencoder_mse_at_vq_init"] < 0.5 * base["autoencoder_mse_at_vq_init"]


def test_same_seed_same_initial_weights_and_identical_metrics():
    a = train(Config(regime="baseline", **TINY))
    b = train(Config(regime="baseline", **TINY))
    assert a["metrics"] == b["metrics"] and torch.equal(a["final"]["tokens"], b["final"]["tokens"])
    c = train(Config(regime="baseline", **{**TINY, "seed": 1}))
    assert not torch.equal(a["final"]["tokens"], c["final"]["tokens"])


class MemoryStore:
    """What train asks of ``pretrained``: get(key) -> state or None, put(key, state)."""

    def __init__(self):
        self.states, self.gets, self.puts = {}, [], []

    def get(self, key):
        self.gets.append(key)
        return copy.deepcopy(self.states.get(key))

    def put(self, key, state):
        self.puts.append(key)
        self.states[key] = copy.deepcopy(state)


def test_a_shared_pretraining_gives_the_results_of_an_unshared_one():
    store = MemoryStore()
    cfg = Config(regime="pretrain", **TINY)
    first = train(cfg, pretrained=store)
    assert store.puts == [pretrain_key(cfg)] and store.gets == [pretrain_key(cfg)]
    other_k = cfg.replace(codebook_size=8)
    assert pretrain_key(other_k) == pretrain_key(cfg) != pretrain_key(cfg.replace(hidden=32))
    shared = train(other_k, pretrained=store)  # restored, not trained: no second put
    assert store.puts == [pretrain_key(cfg)]
    alone = train(other_k)
    assert json.dumps(shared["metrics"]) == json.dumps(alone["metrics"])
    assert json.dumps(shared["curves"]) == json.dumps(alone["curves"])  # pretraining's curve points included
    assert torch.equal(shared["final"]["tokens"], alone["final"]["tokens"])
    assert first["curves"]["step"][:2] == shared["curves"]["step"][:2]
    baseline = train(cfg.replace(regime="baseline"), pretrained=store)  # nothing to pretrain, nothing asked
    assert len(store.gets) == 2 and baseline["curves"]["phase"][0] == "vq"


@pytest.mark.parametrize("field, value, message", [
    ("codebook_size", 0, "codebook_size=0"),
    ("regime", "warmup", "regime='warmup'"),
    ("total_steps", -5, "total_steps=-5"),
    ("hidden", 0, "hidden=0"),
    ("decay", 1.0, "decay=1.0"),
    ("keep_reconstructions", 513, "keep_reconstructions=513"),
])
def test_bad_config_value_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        Config(**{field: value}).validate()
    with pytest.raises(ValueError, match=message):
        train(Config(**{**TINY, field: value}))


def test_pretrain_steps_must_leave_room_for_quantized_training():
    with pytest.raises(ValueError, match=r"pretrain_steps=80 is invalid: must be between 1 and total_steps - 1 = 79"):
        Config(regime="pretrain", total_steps=80, pretrain_steps=80).validate()


def test_every_setting_has_a_one_line_meaning_and_from_dict_rejects_unknown_fields():
    for f in dataclasses.fields(Config):
        assert f.metadata.get("help") and "\n" not in f.metadata["help"], f.name
    assert Config.from_dict({"codebook_size": 8}).codebook_size == 8
    with pytest.raises(ValueError, match="unknown Config field.*codebok_size"):
        Config.from_dict({"codebok_size": 8})


# --- the optimizer (a practitioners' setting; AdamW is the protocol's) ---------------------------

@pytest.mark.parametrize("name, kind, extra", [
    ("adamw", torch.optim.AdamW, {}),
    ("adam", torch.optim.Adam, {}),
    ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
    ("adagrad", torch.optim.Adagrad, {}),
])
def test_each_optimizer_is_built_with_the_runs_lr_and_weight_decay(name, kind, extra):
    cfg = Config(optimizer=name, lr=0.003, weight_decay=0.01).validate()
    opt = training.build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(3))])
    assert type(opt) is kind
    group = opt.param_groups[0]
    assert group["lr"] == 0.003 and group["weight_decay"] == 0.01
    assert all(group[k] == v for k, v in extra.items())
    if name == "adam":
        assert not group.get("decoupled_weight_decay", False), "torch's Adam: L2 added to the gradient"


def test_the_default_optimizer_is_adamw():
    assert Config().optimizer == "adamw"
    assert type(training.build_optimizer(Config(), [torch.nn.Parameter(torch.zeros(1))])) is torch.optim.AdamW


@pytest.mark.parametrize("name", ["adam", "sgd", "adagrad"])
def test_every_optimizer_trains_both_regimes_and_changes_the_run(name):
    adamw = train(Config(regime="pretrain", **TINY))
    other = train(Config(regime="pretrain", optimizer=name, **TINY))
    assert math.isfinite(other["metrics"]["mse"]) and other["metrics"]["mse"] != adamw["metrics"]["mse"]
    assert pretrain_key(Config(optimizer=name)) != pretrain_key(Config())  # pretraining depends on it


def test_a_shared_pretraining_restores_another_optimizers_state():
    store = MemoryStore()
    cfg = Config(regime="pretrain", optimizer="adagrad", **TINY)
    train(cfg, pretrained=store)
    shared = train(cfg.replace(codebook_size=8), pretrained=store)
    alone = train(cfg.replace(codebook_size=8))
    assert json.dumps(shared["metrics"]) == json.dumps(alone["metrics"])


def test_a_bad_optimizer_is_refused_naming_it_and_the_allowed_ones():
    with pytest.raises(InvalidConfig, match=r"optimizer='rmsprop' is invalid: must be one of "
                                            r"\['adamw', 'adam', 'sgd', 'adagrad'\]"):
        Config(optimizer="rmsprop").validate()


def test_an_encoder_whose_outputs_all_died_to_one_point_is_evaluated_with_an_undefined_spread_not_a_crash():
    """C3 at ten times its learning rate drives every encoder output to one point during training
    (zero variance): the evaluation must still return its metrics, the codebook spread relative to
    that variance as NaN, so the run finishes and is stored (it raised ZeroDivisionError)."""
    cfg = Config(**TINY).validate()
    data = training.load_data(cfg)
    model, vq = training.build_model(cfg, data), training.build_quantizer(cfg)
    vq.init_codebook(torch.randn(200, cfg.latent_dim), iters=2, seed=0, vectors_per_batch=64)
    encode = model.encode
    model.encode = lambda x: encode(x) * 0.0  # every output the same point
    m = training.evaluate(model, vq, data, cfg, torch.device("cpu"))
    assert m["embedding_variance"] == 0.0 and math.isnan(m["codebook_spread"])
    assert m["usage"] == 1 / cfg.codebook_size and math.isfinite(m["mse"])
