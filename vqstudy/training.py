"""One config object and one ``train(config)`` for both regimes of STUDY.md.

- ``baseline``: K-means on the *untrained* encoder's outputs gives the codebook, then
  the VQ-VAE trains for ``total_steps``.
- ``pretrain``: the autoencoder first trains without quantization for
  ``pretrain_steps``; K-means on the *pretrained* encoder's outputs gives the codebook;
  then the VQ-VAE trains for ``total_steps - pretrain_steps``.

Same seed -> same initial weights and the same batches; same total number of AdamW
steps in both regimes. Loss = reconstruction MSE + beta * commitment; the codebook
follows the EMA update of :class:`~vqstudy.quantizer.VectorQuantizer`.
"""

import copy
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vqstudy import metrics
from vqstudy.data import gaussian_mixture, split_per_class
from vqstudy.models import MLPAutoencoder
from vqstudy.quantizer import VectorQuantizer

REGIMES = ("baseline", "pretrain")
DATASETS = ("gaussian_mixture", "cifar10")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the run is failed, never a result."""


@dataclass
class Config:
    regime: str = "baseline"
    seed: int = 0
    # data
    data: str = "gaussian_mixture"
    input_dim: int = 16            # gaussian_mixture only
    n_classes: int = 10
    n_train_per_class: int = 1000  # gaussian_mixture only
    n_eval_per_class: int = 500    # gaussian_mixture only
    separation: float = 8.0        # gaussian_mixture: norm of the class means
    noise: float = 1.0             # gaussian_mixture: std of each class
    train_subset: int = 0          # cifar10: use the first n training images (0 = all)
    eval_subset: int = 0           # cifar10: use the first n test images (0 = all)
    # model
    model: str = "mlp"
    latent_dim: int = 2
    hidden: int = 64               # encoder width (MLP) or channels (conv)
    depth: int = 2                 # encoder hidden layers (MLP)
    decoder_hidden: int = 64
    # quantizer
    codebook_size: int = 64
    beta: float = 0.25
    decay: float = 0.99
    kmeans_iters: int = 20
    kmeans_samples: int = 10000    # embeddings sampled for the codebook's K-means
    # optimisation
    total_steps: int = 2000
    pretrain_steps: int = 1000     # pretrain regime only
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # what to keep for figures
    keep_embeddings: int = 2000    # evaluation embeddings stored at VQ init and at the end
    keep_reconstructions: int = 0  # reconstructions of the first n evaluation inputs, at the end (<= 512)
    device: str = "cpu"            # "cpu", "cuda" or "auto"

    def validate(self) -> "Config":
        """Raise ``ValueError`` naming the first bad field, its value and what is allowed."""
        def bad(field, allowed):
            raise ValueError(f"Config.{field}={getattr(self, field)!r} is invalid: must be {allowed}")

        if self.regime not in REGIMES:
            bad("regime", f"one of {REGIMES}")
        if self.data not in DATASETS:
            bad("data", f"one of {DATASETS}")
        if self.model not in ("mlp", "conv"):
            bad("model", "'mlp' or 'conv'")
        if self.device not in ("cpu", "cuda", "auto"):
            bad("device", "'cpu', 'cuda' or 'auto'")
        for field in ("codebook_size", "latent_dim", "hidden", "depth", "decoder_hidden", "total_steps",
                      "batch_size", "n_classes", "input_dim", "n_train_per_class", "n_eval_per_class",
                      "kmeans_samples"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                bad(field, "a positive integer")
        if not 0 <= self.keep_reconstructions <= 512:
            bad("keep_reconstructions", "an integer in 0..512")
        for field in ("seed", "kmeans_iters", "keep_embeddings", "train_subset", "eval_subset", "pretrain_steps"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                bad(field, "a non-negative integer")
        if self.regime == "pretrain" and not 0 < self.pretrain_steps < self.total_steps:
            bad("pretrain_steps", f"between 1 and total_steps - 1 = {self.total_steps - 1} in the pretrain regime")
        for field in ("lr", "separation", "noise"):
            if not getattr(self, field) > 0:
                bad(field, "a positive number")
        if not 0 <= self.decay < 1:
            bad("decay", "in [0, 1)")
        if not self.beta >= 0 or not self.weight_decay >= 0:
            bad("beta" if not self.beta >= 0 else "weight_decay", "a non-negative number")
        return self

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Build a config, rejecting names that are not fields (a typo must not pass)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown Config field(s) {unknown}; allowed: {sorted(fields)}")
        return cls(**values).validate()

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes).validate()


@dataclass
class Data:
    """Train and evaluation tensors plus ``to_input``, which turns a stored batch into
    model input (identity for synthetic data; uint8 -> normalised float for CIFAR-10)."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    to_input: callable


def load_data(cfg: Config) -> Data:
    if cfg.data == "gaussian_mixture":
        x, y = gaussian_mixture(cfg.n_train_per_class + cfg.n_eval_per_class, cfg.input_dim, cfg.n_classes,
                                cfg.separation, cfg.noise, seed=cfg.seed)
        (tx, ty), (ex, ey) = split_per_class(x, y, cfg.n_classes, cfg.n_train_per_class)
        order = torch.randperm(len(ey), generator=torch.Generator().manual_seed(cfg.seed))
        return Data(tx, ty, ex[order], ey[order], lambda b: b)
    from vqstudy import cifar10

    tx, ty = cifar10.load("train")
    ex, ey = cifar10.load("test")
    if cfg.train_subset:
        tx, ty = tx[:cfg.train_subset], ty[:cfg.train_subset]
    if cfg.eval_subset:
        ex, ey = ex[:cfg.eval_subset], ey[:cfg.eval_subset]
    return Data(tx, ty, ex, ey, cifar10.normalize)


def build_model(cfg: Config, data: Data) -> torch.nn.Module:
    if cfg.model == "mlp":
        return MLPAutoencoder(data.train_x.shape[1], cfg.latent_dim, cfg.hidden, cfg.depth, cfg.decoder_hidden)
    from vqstudy.models import ConvAutoencoder

    return ConvAutoencoder(cfg.latent_dim, cfg.hidden)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def batches(n: int, batch_size: int, seed: int):
    """Endless shuffled mini-batch indices, epoch after epoch, from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=g)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield order[start:start + batch_size]


def labels_per_vector(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One label per embedding: an image's label repeated over its grid positions."""
    return y.view(-1, *([1] * (z.dim() - 2))).expand(z.shape[:-1]).reshape(-1)


@torch.no_grad()
def encode_all(model, data: Data, x: torch.Tensor, device, batch_size: int = 1024) -> torch.Tensor:
    """Encoder outputs of all of ``x`` as rows (N * positions, D)."""
    outs = [model.encode(data.to_input(x[i:i + batch_size].to(device))).reshape(-1, model_latent_dim(model))
            for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def model_latent_dim(model) -> int:
    return model.latent_dim if hasattr(model, "latent_dim") else model.encoder[-1].out_features


@torch.no_grad()
def evaluate(model, vq: VectorQuantizer, data: Data, cfg: Config, device, quantize: bool = True) -> dict:
    """Metrics over the whole evaluation set, plus what the figures need: a fixed sample
    of embeddings with their labels, the tokens and the token counts.

    ``quantize=False`` measures the continuous autoencoder (MSE only)."""
    model.eval()
    vq.eval()
    sse, n_values, all_idx, all_labels, kept, kept_labels = 0.0, 0, [], [], [], []
    moments = torch.zeros(2, vq.dim, dtype=torch.float64)
    n_vectors = 0
    for i in range(0, len(data.eval_x), 512):
        x = data.to_input(data.eval_x[i:i + 512].to(device))
        y = data.eval_y[i:i + 512]
        z = model.encode(x)
        z_q, idx, _ = vq(z) if quantize else (z, None, None)
        rec = model.decode(z_q)
        sse += float(F.mse_loss(rec, x, reduction="sum"))
        n_values += x.numel()
        flat = z.reshape(-1, vq.dim).double().cpu()
        moments[0] += flat.sum(0)
        moments[1] += flat.pow(2).sum(0)
        n_vectors += len(flat)
        labels = labels_per_vector(y, z)
        if i == 0 and cfg.keep_reconstructions:
            reconstructions = rec[:cfg.keep_reconstructions].detach().cpu()
        if quantize:
            all_idx.append(idx.reshape(-1).cpu())
            all_labels.append(labels)
        if sum(len(k) for k in kept) < cfg.keep_embeddings:
            kept.append(flat.float())
            kept_labels.append(labels)
    model.train()
    vq.train()
    embed_var = float((moments[1] - moments[0] ** 2 / n_vectors).sum() / (n_vectors - 1))
    out = {"mse": sse / n_values, "embedding_variance": embed_var,
           "embeddings": torch.cat(kept)[:cfg.keep_embeddings] if kept else torch.empty(0, vq.dim),
           "labels": torch.cat(kept_labels)[:cfg.keep_embeddings] if kept else torch.empty(0, dtype=torch.long)}
    if cfg.keep_reconstructions:
        out["reconstructions"] = reconstructions
    if not quantize:
        return out
    if len(out["labels"]):  # separability of the continuous embeddings, on the kept sample
        out.update(metrics.separability(out["embeddings"], out["labels"], seed=cfg.seed))
    idx, labels = torch.cat(all_idx), torch.cat(all_labels)
    counts = metrics.token_counts(idx, vq.num_tokens)
    tokens = vq.codebook.detach().cpu().clone()
    out.update({
        "perplexity": metrics.perplexity(counts),
        "usage": metrics.usage(counts),
        "dead_tokens": metrics.dead_tokens(counts),
        "codebook_spread": metrics.covariance_trace(tokens) / embed_var,
        **metrics.class_coverage(idx, labels, vq.num_tokens, cfg.n_classes),
        "tokens": tokens,
        "counts": counts,
    })
    return out


# Pretraining does not depend on K, the quantizer's settings or total_steps, so runs that
# differ only in those share it: the pretrained weights, the optimizer's state and the
# loss history are kept (a few, in this process) and restored; results are identical.
_PRETRAINED: dict[str, dict] = {}
_PRETRAINED_KEEP = 4
NOT_IN_PRETRAINING = ("regime", "codebook_size", "beta", "decay", "kmeans_iters", "kmeans_samples",
                      "keep_embeddings", "total_steps")


def pretrain_key(cfg: Config) -> str:
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_PRETRAINING}
    return repr(sorted(fields.items()))


def remember_pretrained(key: str, model, optimizer, history: dict) -> None:
    _PRETRAINED[key] = {"model": copy.deepcopy(model.state_dict()),
                        "optimizer": copy.deepcopy(optimizer.state_dict()),
                        "history": copy.deepcopy(history)}
    while len(_PRETRAINED) > _PRETRAINED_KEEP:
        _PRETRAINED.pop(next(iter(_PRETRAINED)))


def restore_pretrained(saved: dict, model, optimizer, history: dict) -> None:
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(copy.deepcopy(saved["optimizer"]))
    for name, values in saved["history"].items():
        history[name].extend(values)


def check_finite(loss: torch.Tensor, step: int, phase: str, cfg: Config) -> None:
    if not math.isfinite(float(loss.detach())):
        raise TrainingDiverged(f"loss is {float(loss.detach())} at {phase} step {step}; config: {dataclasses.asdict(cfg)}")


def torch_threads() -> int:
    """Threads torch may use for one run: ``$VQSTUDY_THREADS``, default 1.

    Measured on the study's 2-core machines: a conv training step took 0.05 s on one
    thread and 0.20 s on two while anything else ran (every multi-threaded op ends in a
    barrier that waits for a descheduled thread); the small MLPs of C1 and C2 are faster
    on one thread even on an idle machine. Parallelism comes from running several runs
    at once (a Dask cluster), not from threads inside one."""
    value = os.environ.get("VQSTUDY_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"VQSTUDY_THREADS={value!r} is invalid: must be a positive integer")
    return int(value)


def train(cfg: Config, progress: bool = False) -> dict:
    """Train one VQ-VAE in ``cfg.regime``; return metrics on the evaluation set at VQ
    initialisation and at the end, and the snapshots the figures draw."""
    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads())
    try:
        return train_here(cfg, progress)
    finally:
        torch.set_num_threads(previous)


def train_here(cfg: Config, progress: bool) -> dict:
    cfg.validate()
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg)
    model = build_model(cfg, data).to(device)  # same seed -> same initial weights in both regimes
    vq = VectorQuantizer(cfg.codebook_size, cfg.latent_dim, cfg.decay).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    stream = batches(len(data.train_x), cfg.batch_size, cfg.seed)
    pretrain_steps = cfg.pretrain_steps if cfg.regime == "pretrain" else 0
    history = {"step": [], "loss": [], "phase": []}
    bar = tqdm(total=cfg.total_steps, disable=not progress, leave=False, file=sys.__stderr__,
               desc=f"{cfg.regime} K={cfg.codebook_size} seed={cfg.seed}")

    def step(loss, phase, i):
        check_finite(loss, i, phase, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i % 10 == 0:
            history["step"].append(i)
            history["loss"].append(float(loss.detach()))
            history["phase"].append(phase)
        bar.update(1)

    key = pretrain_key(cfg)
    if pretrain_steps and key in _PRETRAINED:  # the same pretraining already ran in this process
        restore_pretrained(_PRETRAINED[key], model, optimizer, history)
        for _ in range(pretrain_steps):
            next(stream)  # the VQ phase then sees exactly the batches it would have seen
        bar.update(pretrain_steps)
    else:
        for i in range(pretrain_steps):  # plain autoencoder, no quantizer
            x = data.to_input(data.train_x[next(stream)].to(device))
            step(F.mse_loss(model.decode(model.encode(x)), x), "autoencoder", i)
        if pretrain_steps:
            remember_pretrained(key, model, optimizer, history)

    continuous = evaluate(model, vq, data, cfg, device, quantize=False)
    sample = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(cfg.seed))
    sample_x = data.train_x[sample[:max(1, cfg.kmeans_samples // positions_per_example(cfg))]]
    vq.init_codebook(encode_all(model, data, sample_x, device)[:cfg.kmeans_samples], iters=cfg.kmeans_iters,
                     seed=cfg.seed, vectors_per_batch=cfg.batch_size * positions_per_example(cfg))
    at_init = evaluate(model, vq, data, cfg, device)

    for i in range(pretrain_steps, cfg.total_steps):
        x = data.to_input(data.train_x[next(stream)].to(device))
        z = model.encode(x)
        z_q, _, commitment = vq(z)
        step(F.mse_loss(model.decode(z_q), x) + cfg.beta * commitment, "vq", i)
    bar.close()

    final = evaluate(model, vq, data, cfg, device)
    return {
        "config": dataclasses.asdict(cfg),
        "metrics": {k: v for k, v in final.items() if not isinstance(v, torch.Tensor)},
        "init_metrics": {k: v for k, v in at_init.items() if not isinstance(v, torch.Tensor)},
        "autoencoder_mse_at_vq_init": continuous["mse"],
        "init": {k: at_init[k] for k in ("embeddings", "labels", "tokens", "counts")},
        "final": {k: final[k] for k in ("embeddings", "labels", "tokens", "counts", "reconstructions") if k in final},
        "history": history,
        "seconds": time.perf_counter() - started,
    }


def positions_per_example(cfg: Config) -> int:
    """Embeddings per input: 1 for the MLP, the 8x8 latent grid for the conv model."""
    return 64 if cfg.model == "conv" else 1
