"""The sweep of each notebook: its parameters (a resolved profile, see
:mod:`vqstudy.params`) -> the list of training configs it runs.

The notebook and ``python -m vqstudy sweep`` both call these, so a cluster can
precompute exactly the runs a notebook will later read from the run cache.
"""

from vqstudy.params import resolve
from vqstudy.training import Config

REGIMES = ("baseline", "pretrain")


def synthetic_base(P: dict) -> Config:
    """Config fields shared by the synthetic-data notebooks, from their parameters."""
    return Config(data="gaussian_mixture", model="mlp", input_dim=P["input_dim"], separation=P["separation"],
                  noise=P["noise"], n_train_per_class=P["n_train_per_class"],
                  n_eval_per_class=P["n_eval_per_class"], depth=P["depth"], latent_dim=P["latent_dim"],
                  total_steps=P["total_steps"], pretrain_steps=P["pretrain_steps"], batch_size=P["batch_size"],
                  lr=P["lr"], kmeans_iters=P["kmeans_iters"], device=P["device"])


def tokens_collapse(P: dict) -> list[Config]:
    """C1: every codebook size x regime x seed, at one encoder width."""
    base = synthetic_base(P).replace(hidden=P["hidden"])
    return [base.replace(regime=regime, codebook_size=k, seed=seed)
            for k in P["codebook_sizes"] for regime in REGIMES for seed in P["seeds"]]


def template(P: dict) -> list[Config]:
    """The template notebook (notebooks/template.ipynb): every codebook size x seed, pretrain
    regime only. Copy it for a new claim's sweep."""
    base = synthetic_base(P).replace(hidden=P["hidden"], regime="pretrain")
    return [base.replace(codebook_size=k, seed=seed) for k in P["codebook_sizes"] for seed in P["seeds"]]


def embeddings_collapse(P: dict) -> list[Config]:
    """C2: every encoder width x regime x seed, at one codebook size; every evaluation
    embedding is kept, so separability is measured on the whole evaluation set."""
    base = synthetic_base(P).replace(codebook_size=P["codebook_size"],
                                     keep_embeddings=10 * P["n_eval_per_class"])
    return [base.replace(regime=regime, hidden=width, seed=seed)
            for width in P["widths"] for regime in REGIMES for seed in P["seeds"]]


def cifar10_scaling(P: dict) -> list[Config]:
    """C3: every codebook size x regime x seed on CIFAR-10 with the conv autoencoder. The
    evaluation set is the test set (``eval_subset`` 0 = all 10000 images); 16 test
    reconstructions are kept for the figure."""
    base = Config(data="cifar10", model="conv", latent_dim=P["latent_dim"], hidden=P["width"],
                  train_subset=P["train_subset"], eval_subset=P["eval_subset"], total_steps=P["total_steps"],
                  pretrain_steps=P["pretrain_steps"], batch_size=P["batch_size"], lr=P["lr"],
                  kmeans_iters=P["kmeans_iters"], kmeans_samples=P["kmeans_samples"], keep_embeddings=0,
                  keep_reconstructions=16, device=P["device"])
    return [base.replace(regime=regime, codebook_size=k, seed=seed)
            for k in P["codebook_sizes"] for regime in REGIMES for seed in P["seeds"]]


SWEEPS = {"cifar10_scaling": cifar10_scaling, "tokens_collapse": tokens_collapse, "embeddings_collapse": embeddings_collapse, "template": template}


def configs_for(notebook: str, profile: str, overrides: dict | None = None) -> list[Config]:
    """Every config ``notebook`` trains at ``profile`` (e.g. for ``vqstudy sweep``)."""
    if notebook not in SWEEPS:
        raise ValueError(f"no sweep for notebook {notebook!r}; known: {sorted(SWEEPS)}")
    return SWEEPS[notebook](resolve(notebook, profile, overrides))
