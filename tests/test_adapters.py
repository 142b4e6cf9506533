"""The quantizers of vqstudy.adapters behind the study's interface: for every method,
shapes, gradients to the encoder's input, indices that name the token the decoder gets,
finite losses, K-means where stated and nowhere else; the study's own path unchanged by
the wiring; bad names and codebook sizes refused with the allowed values."""

import inspect

import pandas as pd
import pytest
import torch

from vqstudy import adapters, training
from vqstudy.quantizer import VectorQuantizer
from vqstudy.training import Config, InvalidConfig, train

LATENTS = [(16, 2, (64,)), (64, 8, (4, 4, 4))]  # (K, D, leading shape): MLP-like and conv-like latents


def encoder_and_quantizer(name: str, k: int, d: int, seed: int = 0):
    torch.manual_seed(seed)
    encoder = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, d))
    return encoder, adapters.build(name, k, d)


@pytest.mark.parametrize("k,d,lead", LATENTS)
@pytest.mark.parametrize("name", adapters.QUANTIZERS)
def test_each_method_quantizes_with_gradients_to_the_encoder_input(name, k, d, lead):
    encoder, vq = encoder_and_quantizer(name, k, d)
    x = torch.randn(*lead, 5, requires_grad=True)
    z = encoder(x)
    vq.init_codebook(z.detach().reshape(-1, d).repeat(4, 1) + 0.01 * torch.randn(4 * z[..., 0].numel(), d),
                     iters=3, seed=0, vectors_per_batch=z[..., 0].numel())
    before = vq.codebook.detach().clone()  # training updates the codebook after the lookup
    z_q, indices, loss = vq(z)
    assert z_q.shape == z.shape and indices.shape == z.shape[:-1] and indices.dtype == torch.long
    assert before.shape == (vq.num_tokens, d) and vq.num_tokens == k and vq.dim == d
    assert indices.min() >= 0 and indices.max() < k
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert torch.allclose(z_q, before[indices], atol=1e-4), "the decoder must get the token the index names"
    (z_q.pow(2).sum() + loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", adapters.QUANTIZERS)
def test_evaluation_in_chunks_gives_the_tokens_of_the_codebook(name, monkeypatch):
    monkeypatch.setattr(adapters, "EVAL_CHUNK_ELEMENTS", 64 * 5)  # 5 rows a chunk at K = 64: many chunks
    _, vq = encoder_and_quantizer(name, 64, 8)
    vq.init_codebook(torch.randn(500, 8), iters=2, seed=0)
    vq.eval()
    z = torch.randn(3, 7, 8)
    with torch.no_grad():
        z_q, indices, loss = vq(z)
    assert z_q.shape == z.shape and indices.shape == (3, 7) and torch.isfinite(loss)
    assert torch.allclose(z_q, vq.codebook[indices], atol=1e-5)
    assert torch.equal(vq.codebook, vq.codebook), "evaluation must not change the codebook"


@pytest.mark.parametrize("name", adapters.QUANTIZERS)
def test_kmeans_starts_the_codebook_where_stated_and_nowhere_else(name):
    torch.manual_seed(0)
    blobs = torch.tensor([[10.0, 10.0], [10.0, -10.0], [-10.0, 10.0], [-10.0, -10.0]])
    x = blobs[torch.arange(2000) % 4] + 0.1 * torch.randn(2000, 2)
    vq = adapters.build(name, 16, 2)
    untouched = vq.codebook.clone()
    vq.init_codebook(x, iters=5, seed=0, vectors_per_batch=256)
    if not adapters.METHODS[name].kmeans:
        assert torch.equal(vq.codebook, untouched), f"{name}: init_codebook is documented as a no-op"
        return
    nearest_blob = torch.cdist(vq.codebook, blobs).min(1).values
    if name == "cosine":  # tokens on the unit circle, pointing at the blobs
        assert torch.allclose(vq.codebook.norm(dim=1), torch.ones(16), atol=1e-4)
        assert (torch.cdist(vq.codebook, blobs / blobs.norm(dim=1, keepdim=True)).min(1).values < 0.1).all()
    elif name == "low_dim":  # K-means in the 1-D projection: tokens on a line through the data, not at the blobs
        assert not torch.equal(vq.codebook, untouched)
    else:
        assert (nearest_blob < 1.0).all(), f"{name}: every token should start in a blob, got {nearest_blob}"


def test_the_study_quantizer_is_returned_as_it_is_and_its_loss_weighted_by_beta():
    torch.manual_seed(3)
    built = adapters.build("vq", 32, 4, decay=0.9, beta=0.7)
    torch.manual_seed(3)
    plain = VectorQuantizer(32, 4, 0.9)
    assert type(built) is VectorQuantizer and built.decay == 0.9
    assert torch.equal(built.codebook, plain.codebook), "same seed, same random codebook: the same RNG draws"
    assert adapters.loss_weight("vq", 0.7) == 0.7
    assert all(adapters.loss_weight(name, 0.7) == 1.0 for name in adapters.QUANTIZERS if name != "vq")


TINY = dict(n_train_per_class=40, n_eval_per_class=20, codebook_size=8, total_steps=30, pretrain_steps=10,
            batch_size=64, kmeans_iters=3, keep_embeddings=100, curve_points=3, curve_examples=100)


@pytest.mark.parametrize("regime", ["baseline", "pretrain"])
def test_the_vq_path_trains_exactly_as_the_code_before_the_adapters(regime, monkeypatch):
    """The lines the adapters replaced were ``VectorQuantizer(K, D, decay)`` and
    ``cfg.beta * commitment``: put them back and every metric and curve must match."""
    cfg = Config(regime=regime, quantizer="vq", **TINY)
    wired = train(cfg)
    monkeypatch.setattr(training.adapters, "build", lambda name, k, d, decay, beta, **settings: VectorQuantizer(k, d, decay))
    monkeypatch.setattr(training.adapters, "loss_weight", lambda name, beta, *update: cfg.beta)
    before = train(cfg)
    assert wired["metrics"] == before["metrics"] and wired["init_metrics"] == before["init_metrics"]
    pd.testing.assert_frame_equal(pd.DataFrame(wired["curves"]), pd.DataFrame(before["curves"]))  # NaN == NaN
    assert torch.equal(wired["final"]["tokens"], before["final"]["tokens"])
    assert wired["vq_step_seconds"] > 0


@pytest.mark.parametrize("name", [n for n in adapters.QUANTIZERS if n != "vq"])
def test_every_library_method_trains_end_to_end(name):
    result = train(Config(quantizer=name, **TINY))
    m = result["metrics"]
    assert m["mse"] > 0 and 0 < m["usage"] <= 1 and 1 <= m["perplexity"] <= 8
    assert result["final"]["tokens"].shape == (8, 2)


def test_the_library_quantizer_set_up_as_the_study_agrees_with_it():
    """Same K-means, EMA, smoothing, commitment and straight-through: on a short run the
    two implementations end with the same codebook use."""
    own = train(Config(quantizer="vq", **TINY))["metrics"]
    lib = train(Config(quantizer="lib_vq", **TINY))["metrics"]
    assert lib["usage"] == pytest.approx(own["usage"]) and lib["perplexity"] == pytest.approx(own["perplexity"], rel=1e-3)
    assert lib["mse"] == pytest.approx(own["mse"], rel=1e-3)


def test_a_bad_quantizer_name_is_refused_with_the_allowed_names():
    with pytest.raises(InvalidConfig) as err:
        Config(quantizer="vqq").validate()
    assert "quantizer='vqq'" in str(err.value) and all(name in str(err.value) for name in adapters.QUANTIZERS)
    with pytest.raises(ValueError, match=r"quantizer='nope' is invalid: must be one of \['vq', 'lib_vq'"):
        adapters.build("nope", 8, 2)


@pytest.mark.parametrize("name,k", [("fsq", 100), ("fsq", 2), ("lfq", 48)])
def test_a_codebook_size_fsq_or_lfq_cannot_have_is_refused(name, k):
    with pytest.raises(InvalidConfig, match=rf"codebook_size={k}.*power of two.*quantizer='{name}'"):
        Config(quantizer=name, codebook_size=k).validate()
    with pytest.raises(ValueError, match=rf"codebook_size={k}"):
        adapters.build(name, k, 2)


@pytest.mark.parametrize("k,levels", [(4, [4]), (16, [4, 4]), (32, [8, 4]), (512, [8, 8, 8]),
                                      (8192, [8, 8, 8, 4, 4]), (65536, [8, 8, 8, 8, 4, 4])])
def test_fsq_levels_multiply_to_k_exactly_without_a_level_of_two(k, levels):
    assert adapters.fsq_levels(k) == levels
    assert adapters.build("fsq", k, 3).num_tokens == k


def test_the_arguments_table_is_made_from_the_dictionaries_the_modules_are_built_with():
    table = adapters.arguments_table({"A": (512, 2), "B": (8192, 16)}).set_index("method")
    assert list(table.index) == [n for n, m in adapters.METHODS.items() if m.library_class]
    for name in table.index:
        built = adapters.constructor_arguments(name, 8192, 16)
        assert table.loc[name, "B"] == ", ".join(f"{a}={v!r}" for a, v in built.items())
    assert "decay: 0.8 → 0.99" in table.loc["lib_vq", "changed from the library's defaults"]
    assert "threshold_ema_dead_code: 0 → 2" in table.loc["dead_code", "changed from the library's defaults"]
    assert "levels=[8, 8, 8, 4, 4]" in table.loc["fsq", "B"]
    import vector_quantize_pytorch as library

    defaults = inspect.signature(library.VectorQuantize.__init__).parameters
    assert defaults["decay"].default == 0.8 and defaults["kmeans_init"].default is False


def test_quantizer_parameters_join_the_optimizer_and_pretraining_is_shared_across_quantizers():
    base = Config(regime="pretrain", quantizer="vq", **TINY)
    assert training.pretrain_key(base) == training.pretrain_key(base.replace(quantizer="simvq"))
    # SimVQ's linear map trains: the implicit codebook moves although its frozen codebook does not
    torch.manual_seed(0)
    fresh = adapters.build("simvq", 8, 2).codebook
    result = train(base.replace(quantizer="simvq"))
    assert not torch.allclose(result["final"]["tokens"], fresh)


# --- the settings of the practitioners' chapters: dead_code_threshold, codebook_update ------------

@pytest.mark.parametrize("threshold", [0.0, 0.025, 2.0, 16.0])
def test_dead_code_threshold_reaches_the_library_module(threshold):
    """Config.dead_code_threshold is the argument threshold_ema_dead_code of the dead_code
    method's VectorQuantize (and, by the library's default, the count a replaced token
    restarts with); 0 switches the replacement off."""
    cfg = Config(quantizer="dead_code", codebook_size=16, dead_code_threshold=threshold).validate()
    book = training.build_quantizer(cfg).module._codebook
    assert book.threshold_ema_dead_code == threshold and book.reset_cluster_size == threshold
    assert book.has_dead_code_replacement == (threshold > 0)
    assert adapters.constructor_arguments("dead_code", 16, 2, dead_code_threshold=threshold)[
        "threshold_ema_dead_code"] == threshold
    assert adapters.constructor_arguments("lib_vq", 16, 2, dead_code_threshold=threshold)["threshold_ema_dead_code"] == 0


def test_dead_code_threshold_is_the_fixes_chapters_2_by_default_and_shown_as_a_setting():
    assert Config().dead_code_threshold == 2.0 == adapters.DEAD_CODE_DEFAULT
    assert training.build_quantizer(Config(quantizer="dead_code", codebook_size=16)).module._codebook \
        .threshold_ema_dead_code == 2.0
    table = adapters.arguments_table({"A": (16, 2)}, dead_code_threshold=0.5).set_index("method")
    assert "threshold_ema_dead_code=0.5" in table.loc["dead_code", "A"]
    assert "threshold_ema_dead_code: 0 → 0.5 (dead_code_threshold)" in \
        table.loc["dead_code", "changed from the library's defaults"]


@pytest.mark.parametrize("changes, message", [
    ({"dead_code_threshold": -1.0, "quantizer": "dead_code"}, r"dead_code_threshold=-1.0 is invalid: must be a "
                                                              r"non-negative number \(0: no reset\)"),
    ({"dead_code_threshold": float("nan"), "quantizer": "dead_code"}, r"dead_code_threshold=nan is invalid"),
    ({"dead_code_threshold": "2", "quantizer": "dead_code"}, r"dead_code_threshold='2' is invalid"),
    ({"dead_code_threshold": 4.0}, r"dead_code_threshold=4.0 is invalid: must be 2.0 \(the default\) for "
                                   r"quantizer='vq': only the dead_code method resets tokens"),
    ({"codebook_update": "adam"}, r"codebook_update='adam' is invalid: must be one of \['ema', 'gradient'\]"),
    ({"codebook_update": "gradient", "quantizer": "dead_code"},
     r"codebook_update='gradient' is invalid: must be 'ema' for quantizer='dead_code' \(the gradient update is the "
     r"study's own quantizer's, 'vq'"),
])
def test_bad_dead_code_thresholds_and_codebook_updates_are_refused_naming_the_value(changes, message):
    with pytest.raises(InvalidConfig, match=message):
        Config(**changes).validate()


def test_the_gradient_update_is_refused_by_the_builder_for_a_library_method():
    with pytest.raises(ValueError, match=r"codebook_update='gradient' is invalid: must be 'ema' for quantizer='lfq'"):
        adapters.build("lfq", 16, 2, codebook_update="gradient")
    with pytest.raises(ValueError, match=r"codebook_update='sgd' is invalid: must be one of"):
        adapters.loss_weight("vq", 0.25, "sgd")


def test_the_gradient_codebook_is_a_parameter_with_the_vq_vae_codebook_loss_and_no_ema():
    """codebook_update="gradient": the tokens are a parameter, no buffer exists, a training
    forward changes nothing, and the loss is |sg[z] - e|^2 + beta |z - sg[e]|^2: its gradient
    to a chosen token e is 2 (e - z) summed over the rows that chose it / numel, to z
    2 beta (z - e) / numel plus the straight-through gradient; a token never chosen gets 0."""
    torch.manual_seed(0)
    vq = adapters.build("vq", 8, 3, beta=0.5, codebook_update="gradient")
    assert type(vq).__name__ == "GradientVectorQuantizer" and list(vq.buffers()) == []
    assert [n for n, _ in vq.named_parameters()] == ["codebook"]
    assert adapters.loss_weight("vq", 0.5, "gradient") == 1.0 and adapters.loss_weight("vq", 0.5) == 0.5
    torch.manual_seed(0)
    assert torch.equal(vq.codebook.detach(), VectorQuantizer(8, 3).codebook), "the same random codebook as EMA's"
    tokens = torch.tensor([[0., 0., 0.], [5., 5., 5.], [-5., 0., 0.], [0., 9., 0.],
                           [0., 0., 9.], [9., 0., 0.], [0., -9., 0.], [0., 0., -9.]])
    vq.set_codebook(tokens)
    z = torch.tensor([[0.5, 0., 0.], [4., 5., 6.], [0., 0., -1.]], requires_grad=True)
    before = vq.codebook.detach().clone()
    vq.train()
    z_q, idx, loss = vq(z)
    assert idx.tolist() == [0, 1, 0] and torch.equal(z_q, tokens[idx])
    assert torch.equal(vq.codebook.detach(), before), "no update in forward"
    residual = z.detach() - tokens[idx]
    mean_sq = residual.pow(2).mean()
    assert loss.item() == pytest.approx((1 + 0.5) * mean_sq.item())
    loss.backward()
    expected = torch.zeros_like(tokens).index_add_(0, idx, -2 * residual / residual.numel())
    assert torch.allclose(vq.codebook.grad, expected) and vq.codebook.grad[2:].abs().sum() == 0
    assert torch.allclose(z.grad, 2 * 0.5 * residual / residual.numel())


def test_a_gradient_codebook_is_moved_by_the_optimizer_only():
    """In training the gradient codebook joins the optimizer when quantization starts: its
    tokens move from where K-means put them; with a learning rate of 0 nothing moves them."""
    cfg = Config(codebook_update="gradient", **TINY)
    result = train(cfg)
    assert not torch.equal(result["final"]["tokens"], result["init"]["tokens"])
    assert result["metrics"]["mse"] > 0 and 1 <= result["metrics"]["perplexity"] <= 8
    frozen = train(cfg.replace(lr=1e-12, weight_decay=0.0))  # lr must be positive: tiny steps instead of none
    assert torch.allclose(frozen["final"]["tokens"], frozen["init"]["tokens"], atol=1e-6)
    assert training.pretrain_key(cfg) == training.pretrain_key(cfg.replace(codebook_update="ema"))
