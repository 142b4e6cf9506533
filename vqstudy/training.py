"""One config object and one ``train(config)`` for both regimes of the study's protocol
(the book's *Protocol* page, ``book/protocol.md``).

- ``baseline``: K-means on the *untrained* encoder's outputs gives the codebook, then
  the VQ-VAE trains for ``total_steps``.
- ``pretrain``: the autoencoder first trains without quantization for
  ``pretrain_steps``; K-means on the *pretrained* encoder's outputs gives the codebook;
  then the VQ-VAE trains for ``total_steps - pretrain_steps``.

Same seed -> same initial weights and the same batches; same total number of optimizer
steps in both regimes. By default (the protocol's): AdamW; loss = reconstruction MSE +
beta * commitment; the codebook follows the EMA update of
:class:`~vqstudy.quantizer.VectorQuantizer`. The practitioners' chapters change three
settings the protocol fixes: ``optimizer`` (:func:`build_optimizer`), ``codebook_update``
("gradient": the VQ-VAE codebook loss learned by the optimizer,
:class:`~vqstudy.quantizer.GradientVectorQuantizer`) and ``dead_code_threshold`` (the
``dead_code`` method's, :mod:`vqstudy.adapters`); at their defaults every run is bit for bit
what it was before they existed.

Every field of :class:`Config` is also the name of the notebook parameter that sets it
(``notebooks/profiles.yml``): one name per setting, from the profile to the run.
"""

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vqstudy import adapters
from vqstudy import inits
from vqstudy import metrics
from vqstudy.data import gaussian_mixture, split_per_class
from vqstudy.models import ConvAutoencoder, MLPAutoencoder
from vqstudy.quantizer import VectorQuantizer

REGIMES = ("baseline", "pretrain")
DATASETS = ("gaussian_mixture", "cifar10")
MODELS = ("mlp", "conv")
DEVICES = ("cpu", "cuda", "auto")
OPTIMIZERS = ("adamw", "adam", "sgd", "adagrad")
SGD_MOMENTUM = 0.9  # optimizer="sgd": heavy-ball momentum, no Nesterov
CODEBOOK_UPDATES = adapters.CODEBOOK_UPDATES
DEAD_CODE_THRESHOLD = adapters.DEAD_CODE_DEFAULT


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the run is failed, never a result."""


class InvalidConfig(ValueError):
    """A config field has a value it cannot have; ``field`` names it."""

    def __init__(self, name: str, value, allowed: str):
        self.field, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={value!r} is invalid: must be {allowed}")


def setting(default, help: str):
    """A config field with its one-line meaning (shown by ``papermill --help-notebook``)."""
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    regime: str = setting("baseline", "baseline: K-means on the untrained encoder; pretrain: autoencoder first")
    seed: int = setting(0, "random seed: initial weights, data (synthetic), batches, K-means")
    # data
    data: str = setting("gaussian_mixture", "gaussian_mixture (synthetic) or cifar10")
    input_dim: int = setting(16, "dimensions of the synthetic inputs")
    n_classes: int = setting(10, "classes of the synthetic mixture")
    n_train_per_class: int = setting(1000, "synthetic training points per class")
    n_eval_per_class: int = setting(500, "synthetic evaluation points per class")
    separation: float = setting(8.0, "norm of the synthetic class means (noise std 1: larger is easier)")
    noise: float = setting(1.0, "standard deviation of each synthetic class")
    train_subset: int = setting(0, "CIFAR-10: train on the first n training images (0: all 50000)")
    eval_subset: int = setting(0, "CIFAR-10: evaluate on the first n test images (0: all 10000)")
    # model
    model: str = setting("mlp", "mlp (synthetic data) or conv (CIFAR-10)")
    latent_dim: int = setting(2, "dimension D of an embedding and of a token")
    hidden: int = setting(64, "encoder width: hidden units a layer (mlp) or channels (conv)")
    depth: int = setting(2, "hidden layers of the MLP encoder")
    decoder_hidden: int = setting(64, "hidden units a layer of the MLP decoder")
    # quantizer
    codebook_size: int = setting(64, "K, the number of tokens")
    beta: float = setting(0.25, "weight of the commitment loss")
    decay: float = setting(0.99, "EMA decay of the codebook update (codebook_update ema)")
    codebook_update: str = setting("ema", "how the study's own quantizer (vq) learns its tokens: ema (the VQ-VAE "
                                          "appendix's moving averages, decay) or gradient (the VQ-VAE codebook loss "
                                          "|sg[z] - e|^2 added to the loss and learned by the optimizer, no EMA)")
    dead_code_threshold: float = setting(DEAD_CODE_THRESHOLD,
                                         "quantizer dead_code: a token whose EMA count of uses per batch falls "
                                         "below this is replaced by an encoder output of the batch (0: never)")
    quantizer: str = setting(adapters.STUDY, "vq (the study's own) or a vector-quantize-pytorch method "
                                             "(vqstudy.adapters.METHODS)")
    codebook_init: str = setting("kmeans", "how the codebook starts when quantization does: kmeans (the paper's) "
                                           "or another of vqstudy.inits.METHODS")
    kmeans_iters: int = setting(20, "Lloyd iterations of the codebook's K-means (after k-means++ seeding)")
    kmeans_samples: int = setting(10000, "encoder outputs sampled from the training set for the K-means")
    # optimisation
    total_steps: int = setting(2000, "optimizer steps in all, in both regimes")
    pretrain_steps: int = setting(1000, "of those, steps of the plain autoencoder (pretrain regime only)")
    batch_size: int = setting(256, "training examples a step")
    optimizer: str = setting("adamw", "adamw (the protocol's), adam, sgd (momentum 0.9) or adagrad, with the same "
                                      "lr and weight_decay")
    lr: float = setting(1e-3, "learning rate of the optimizer")
    weight_decay: float = setting(1e-4, "AdamW weight decay (decoupled); adam, sgd and adagrad take it as torch "
                                        "does, an L2 term weight_decay x parameter added to the gradient")
    # what to keep for figures
    keep_embeddings: int = setting(2000, "evaluation embeddings stored at VQ initialisation and at the end")
    keep_reconstructions: int = setting(0, "reconstructions of the first n evaluation inputs kept (<= 512)")
    curve_points: int = setting(20, "points of the training curves (0: none)")
    curve_examples: int = setting(1000, "evaluation examples the training curves are measured on")
    pooled_separability: int = setting(0, "separability (pooled_* metrics) of one embedding per example, the mean "
                                          "over its positions, on the first n evaluation examples (0: off)")
    token_probes: int = setting(0, "linear probes of the class (probe_* metrics) from the tokens, token vectors "
                                   "and embeddings of the first n evaluation examples (0: off)")
    device: str = setting("cpu", "cpu, cuda, or auto (cuda when there is one)")

    def validate(self) -> "Config":
        """Raise :class:`InvalidConfig` naming the first bad field, its value and what is allowed."""
        def bad(name, allowed):
            raise InvalidConfig(name, getattr(self, name), allowed)

        for name, allowed in (("regime", REGIMES), ("data", DATASETS), ("model", MODELS), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                bad(name, f"one of {list(allowed)}")
        for name in ("codebook_size", "latent_dim", "hidden", "depth", "decoder_hidden", "total_steps",
                     "batch_size", "n_classes", "input_dim", "n_train_per_class", "n_eval_per_class",
                     "kmeans_samples", "curve_examples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                bad(name, "a positive integer")
        if self.quantizer not in adapters.QUANTIZERS:
            bad("quantizer", f"one of {list(adapters.QUANTIZERS)}")
        if problem := adapters.codebook_size_problem(self.quantizer, self.codebook_size):
            bad("codebook_size", f"{problem} for quantizer={self.quantizer!r}")
        if self.codebook_init not in inits.METHODS:
            bad("codebook_init", f"one of {list(inits.METHODS)}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"one of {list(OPTIMIZERS)}")
        if self.codebook_update not in CODEBOOK_UPDATES:
            bad("codebook_update", f"one of {list(CODEBOOK_UPDATES)}")
        if self.codebook_update != "ema" and self.quantizer != adapters.STUDY:
            bad("codebook_update", f"'ema' for quantizer={self.quantizer!r} (the gradient update is the study's own "
                                   f"quantizer's, {adapters.STUDY!r}; a library method updates its codebook as its "
                                   "module does)")
        threshold = self.dead_code_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0 \
                or not math.isfinite(threshold):
            bad("dead_code_threshold", "a non-negative number (0: no reset)")
        if threshold != DEAD_CODE_THRESHOLD and self.quantizer != "dead_code":
            bad("dead_code_threshold", f"{DEAD_CODE_THRESHOLD} (the default) for quantizer={self.quantizer!r}: only "
                                       "the dead_code method resets tokens")
        if self.codebook_init != "kmeans" and self.quantizer != adapters.STUDY:
            bad("codebook_init", f"'kmeans' for quantizer={self.quantizer!r} (the other initialisers set the "
                                 f"codebook of the study's own quantizer, {adapters.STUDY!r})")
        for name in ("seed", "kmeans_iters", "keep_embeddings", "train_subset", "eval_subset", "pretrain_steps",
                     "curve_points", "pooled_separability", "token_probes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                bad(name, "a non-negative integer")
        if not 0 <= self.keep_reconstructions <= 512:
            bad("keep_reconstructions", "an integer in 0..512")
        if self.regime == "pretrain" and not 0 < self.pretrain_steps < self.total_steps:
            bad("pretrain_steps", f"between 1 and total_steps - 1 = {self.total_steps - 1} in the pretrain regime")
        for name in ("lr", "separation", "noise"):
            if not getattr(self, name) > 0:
                bad(name, "a positive number")
        if not 0 <= self.decay < 1:
            bad("decay", "in [0, 1)")
        for name in ("beta", "weight_decay"):
            if not getattr(self, name) >= 0:
                bad(name, "a non-negative number")
        if self.codebook_size > self.kmeans_points():
            bad("codebook_size", f"at most the {self.kmeans_points()} encoder outputs its K-means is given "
                                 "(kmeans_samples, and the training set's size)")
        return self

    def kmeans_points(self) -> int:
        """How many encoder outputs the codebook's K-means gets: ``kmeans_samples``, or
        fewer when the training set has fewer examples times positions."""
        if self.data == "cifar10":
            examples = self.train_subset or 50_000
        else:
            examples = self.n_train_per_class * self.n_classes
        return min(self.kmeans_samples, examples * positions_per_example(self))

    def memory_estimate(self) -> dict:
        """Bytes the run's largest allocations need, by what needs them: the codebook (the
        tokens, their EMA sums, the search's reordered copy, the K-means centres, and
        per-token counts including the K x classes table of class coverage), the K-means
        sample, and the data set held in memory. Torch itself and the models (a few
        hundred MB) are not counted."""
        k, d = self.codebook_size, self.latent_dim
        if self.data == "cifar10":
            data = (self.train_subset or 50_000) * 3072 + (self.eval_subset or 10_000) * 3072
        else:
            data = (self.n_train_per_class + self.n_eval_per_class) * self.n_classes * self.input_dim * 4 * 2
        return {"codebook": k * d * 4 * 4 + k * 8 * (self.n_classes + 3),
                "kmeans_samples": self.kmeans_points() * d * 4 * 3,
                "data": data}

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Build a config, rejecting names that are not fields (a typo must not pass)."""
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown Config field(s) {unknown}; allowed: {sorted(FIELDS)}")
        return cls(**values).validate()

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes).validate()


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def positions_per_example(cfg: Config) -> int:
    """Embeddings per input: 1 for the MLP, the 8x8 latent grid for the conv model."""
    return 64 if cfg.model == "conv" else 1


def resolve_device(name: str) -> torch.device:
    """The one place a device name becomes a device: ``auto`` is a GPU when there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    return ConvAutoencoder(cfg.latent_dim, cfg.hidden)


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
    outs = [model.encode(data.to_input(x[i:i + batch_size].to(device)))
            for i in range(0, len(x), batch_size)]
    return torch.cat([o.reshape(-1, o.shape[-1]) for o in outs])


@torch.no_grad()
def evaluate(model, vq: VectorQuantizer, data: Data, cfg: Config, device, quantize: bool = True,
             n_examples: int | None = None, details: bool = True) -> dict:
    """Metrics over the whole evaluation set (or its first ``n_examples``), plus what the
    figures need: a fixed sample of embeddings with their labels, the tokens and the
    token counts.

    ``quantize=False`` measures the continuous autoencoder (MSE only); ``details=False``
    skips the separability probe and the snapshots (the training curves)."""
    model.eval()
    vq.eval()
    eval_x, eval_y = data.eval_x[:n_examples], data.eval_y[:n_examples]
    sse, n_values, all_idx, all_labels, kept, kept_labels = 0.0, 0, [], [], [], []
    moments = torch.zeros(2, vq.dim, dtype=torch.float64)
    n_vectors = 0
    per_example = []  # (embedding, token vector, token ids, label) per example, for pooled separability and probes
    n_per_example = max(cfg.pooled_separability, cfg.token_probes) if details and quantize else 0
    for i in range(0, len(eval_x), 512):
        x = data.to_input(eval_x[i:i + 512].to(device))
        y = eval_y[i:i + 512]
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
        if i == 0 and cfg.keep_reconstructions and details:
            reconstructions = rec[:cfg.keep_reconstructions].detach().cpu()
        if quantize:
            all_idx.append(idx.reshape(-1).cpu())
            all_labels.append(labels)
        if details and sum(len(k) for k in kept) < cfg.keep_embeddings:
            kept.append(flat.float())
            kept_labels.append(labels)
        if i < n_per_example:  # the first n examples, one row each (positions averaged; token ids kept)
            per_example.append((metrics.pool_positions(z).cpu(), metrics.pool_positions(z_q).cpu(),
                                idx.reshape(len(y), -1).cpu(), y))
    model.train()
    vq.train()
    embed_var = float((moments[1] - moments[0] ** 2 / n_vectors).sum() / (n_vectors - 1))
    out = {"mse": sse / n_values, "embedding_variance": embed_var}
    if details:
        out["embeddings"] = torch.cat(kept)[:cfg.keep_embeddings] if kept else torch.empty(0, vq.dim)
        out["labels"] = torch.cat(kept_labels)[:cfg.keep_embeddings] if kept else torch.empty(0, dtype=torch.long)
        if cfg.keep_reconstructions:
            out["reconstructions"] = reconstructions
    if not quantize:
        return out
    if details and len(out["labels"]):  # separability of the continuous embeddings, on the kept sample
        out.update(metrics.separability(out["embeddings"], out["labels"], seed=cfg.seed))
    idx, labels = torch.cat(all_idx), torch.cat(all_labels)
    counts = metrics.token_counts(idx, vq.num_tokens)
    tokens = vq.codebook.detach().cpu().clone()
    out.update({
        "perplexity": metrics.perplexity(counts),
        "usage": metrics.usage(counts),
        "dead_tokens": metrics.dead_tokens(counts),
        "codebook_spread": metrics.ratio(metrics.covariance_trace(tokens), embed_var),
        "tokens": tokens,
        "counts": counts,
    })
    if details:
        out.update(metrics.class_coverage(idx, labels, vq.num_tokens, cfg.n_classes))
    if per_example:
        out.update(per_example_metrics(per_example, cfg, vq.num_tokens))
    return out


def per_example_metrics(rows: list, cfg: Config, num_tokens: int) -> dict:
    """On the first evaluation examples, one vector per example: the separability of the
    pooled embeddings (``pooled_`` + :func:`metrics.separability`'s names, when
    ``cfg.pooled_separability``) and the linear probes of :func:`metrics.token_probes`
    (when ``cfg.token_probes``). ``rows``: per batch, (pooled embeddings, pooled token
    vectors, token ids, labels)."""
    z, z_q, idx, y = (torch.cat(parts) for parts in zip(*rows))
    out = {}
    if cfg.pooled_separability:
        n = cfg.pooled_separability
        out.update({f"pooled_{k}": v for k, v in metrics.separability(z[:n], y[:n], seed=cfg.seed).items()})
    if cfg.token_probes:
        n = cfg.token_probes
        out.update(metrics.token_probes(z[:n], z_q[:n], idx[:n], y[:n], num_tokens, seed=cfg.seed))
    return out


# Pretraining does not depend on K, the quantizer's settings or total_steps, so runs that
# differ only in those can share it (``pretrained``: a store, see ``runs.PretrainedStore``).
# (total_steps is not among them: the training curve's points during pretraining are
# placed over the whole schedule.)
NOT_IN_PRETRAINING = ("regime", "codebook_size", "beta", "decay", "kmeans_iters", "kmeans_samples",
                      "keep_embeddings", "keep_reconstructions",
                      "quantizer",  # built before pretraining, but takes no part in it
                      "codebook_init",  # the codebook starts after pretraining
                      "codebook_update", "dead_code_threshold",  # how the codebook learns, once it exists
                      "pooled_separability", "token_probes")  # measured after quantization starts


def pretrain_key(cfg: Config) -> str:
    """What identifies a pretraining: every field it depends on (all but ``NOT_IN_PRETRAINING``)."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_PRETRAINING}
    return repr(sorted(fields.items()))


def check_finite(loss: torch.Tensor, step: int, phase: str, cfg: Config) -> None:
    if not math.isfinite(float(loss.detach())):
        raise TrainingDiverged(f"loss is {float(loss.detach())} at {phase} step {step}; config: {dataclasses.asdict(cfg)}")


def torch_threads() -> int:
    """Threads torch may use for one run: ``$VQSTUDY_THREADS``, default 1.

    Measured on the study's 2-core machines: a conv training step took 0.05 s on one
    thread and 0.20 s on two while anything else ran (every multi-threaded op ends in a
    barrier that waits for a descheduled thread); the small MLPs of C1 and C2 are faster
    on one thread even on an idle machine. Parallelism comes from running several runs
    at once (``runs.run_all``'s worker processes), not from threads inside one."""
    value = os.environ.get("VQSTUDY_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"VQSTUDY_THREADS={value!r} is invalid: must be a positive integer")
    return int(value)


def curve_steps(cfg: Config) -> set[int]:
    """The steps after which a training-curve point is measured: ``curve_points`` evenly
    spaced over the whole schedule, the last one at the end."""
    n = min(cfg.curve_points, cfg.total_steps)
    return {round(cfg.total_steps * (i + 1) / n) for i in range(n)} if n else set()


def build_optimizer(cfg: Config, parameters) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, with ``cfg.lr`` and ``cfg.weight_decay``:
    AdamW (the protocol's; decoupled weight decay), Adam, SGD with momentum
    ``SGD_MOMENTUM``, or Adagrad (each of the last three with torch's L2 weight decay)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=cfg.lr, momentum=SGD_MOMENTUM, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise InvalidConfig("optimizer", cfg.optimizer, f"one of {list(OPTIMIZERS)}")


def build_quantizer(cfg: Config) -> torch.nn.Module:
    """The run's quantizer: ``cfg.quantizer`` for K = ``codebook_size`` tokens of dimension
    ``latent_dim``, with the settings of its codebook (:func:`vqstudy.adapters.build`)."""
    return adapters.build(cfg.quantizer, cfg.codebook_size, cfg.latent_dim, cfg.decay, cfg.beta,
                          dead_code_threshold=cfg.dead_code_threshold, codebook_update=cfg.codebook_update)


def train(cfg: Config, progress: bool = False, pretrained=None) -> dict:
    """Train one VQ-VAE in ``cfg.regime``; return metrics on the evaluation set at VQ
    initialisation and at the end, the training curves, and the snapshots the figures
    draw. ``pretrained``: an object with ``get(key)`` and ``put(key, state)`` that keeps
    pretrainings for reuse by runs that differ only in K (results are identical)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads())
    try:
        return train_here(cfg.validate(), progress, pretrained)
    finally:
        torch.set_num_threads(previous)


def train_here(cfg: Config, progress: bool, pretrained) -> dict:
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = load_data(cfg)
    model = build_model(cfg, data).to(device)  # same seed -> same initial weights in both regimes
    vq = build_quantizer(cfg).to(device)
    optimizer = build_optimizer(cfg, model.parameters())
    stream = batches(len(data.train_x), cfg.batch_size, cfg.seed)
    pretrain_steps = cfg.pretrain_steps if cfg.regime == "pretrain" else 0
    at_steps = curve_steps(cfg)
    curves = {"step": [], "phase": [], "loss": [], "mse": [], "perplexity": [], "usage": [], "dead_tokens": []}
    window = []  # training losses since the last curve point
    bar = tqdm(total=cfg.total_steps, disable=not progress, leave=False, file=sys.stderr,
               desc=f"{cfg.regime} K={cfg.codebook_size} seed={cfg.seed}")

    def curve_point(step: int, phase: str) -> None:
        """Metrics on the first ``curve_examples`` evaluation examples, and the mean
        training loss since the last point (none at the point where quantization starts)."""
        m = evaluate(model, vq, data, cfg, device, quantize=phase == "vq", n_examples=cfg.curve_examples,
                     details=False)
        curves["step"].append(step)
        curves["phase"].append(phase)
        curves["loss"].append(sum(window) / len(window) if window else float("nan"))
        curves["mse"].append(m["mse"])
        for name in ("perplexity", "usage", "dead_tokens"):
            curves[name].append(m.get(name, float("nan")))
        window.clear()

    def step(loss, phase, i):
        check_finite(loss, i, phase, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(float(loss.detach()))
        if i + 1 in at_steps:
            curve_point(i + 1, phase)
        bar.update(1)

    key = pretrain_key(cfg)
    saved = pretrained.get(key) if pretrain_steps and pretrained is not None else None
    if saved is not None:  # the same pretraining already ran: restore it, and skip its batches
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for name, values in saved["curve"].items():
            curves[name].extend(values)
        for _ in range(pretrain_steps):
            next(stream)  # the VQ phase then sees exactly the batches it would have seen
        bar.update(pretrain_steps)
    else:
        for i in range(pretrain_steps):  # plain autoencoder, no quantizer
            x = data.to_input(data.train_x[next(stream)].to(device))
            step(F.mse_loss(model.decode(model.encode(x)), x), "autoencoder", i)
        if pretrain_steps and pretrained is not None:  # put() stores a copy at once
            pretrained.put(key, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "curve": {k: list(v) for k, v in curves.items()}})
    if quantizer_parameters := list(vq.parameters()):  # an adapter's (SimVQ's map, projections), or the tokens
        # of codebook_update="gradient": the same optimizer
        optimizer.add_param_group({"params": quantizer_parameters})  # after the stored pretraining's state

    continuous = evaluate(model, vq, data, cfg, device, quantize=False)
    sample = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(cfg.seed))
    sample_x = data.train_x[sample[:max(1, cfg.kmeans_samples // positions_per_example(cfg))]]
    embeddings = encode_all(model, data, sample_x, device)[:cfg.kmeans_samples]
    per_batch = cfg.batch_size * positions_per_example(cfg)
    if cfg.codebook_init == "kmeans":  # the paper's: every quantizer implements it
        vq.init_codebook(embeddings, iters=cfg.kmeans_iters, seed=cfg.seed, vectors_per_batch=per_batch)
    else:  # another initialiser (vqstudy.inits), for the study's own quantizer
        vq.set_codebook(*inits.initial_codebook(cfg.codebook_init, embeddings, cfg.codebook_size, cfg.seed),
                        vectors_per_batch=per_batch)
    at_init = evaluate(model, vq, data, cfg, device)
    window.clear()  # losses of autoencoder steps after the last curve point do not belong to the VQ phase
    if cfg.curve_points:
        curve_point(pretrain_steps, "vq")  # the codebook as K-means left it

    # beta for the study's unweighted commitment; 1 for a quantizer that weights its own loss
    loss_weight = adapters.loss_weight(cfg.quantizer, cfg.beta, cfg.codebook_update)
    step_seconds = []  # per VQ step; the median leaves out the steps that measured a curve point
    for i in range(pretrain_steps, cfg.total_steps):
        step_started = time.perf_counter()
        x = data.to_input(data.train_x[next(stream)].to(device))
        z = model.encode(x)
        z_q, _, commitment = vq(z)  # an adapter's loss is already weighted as its library module weights it
        step(F.mse_loss(model.decode(z_q), x) + loss_weight * commitment, "vq", i)
        step_seconds.append(time.perf_counter() - step_started)
    bar.close()

    final = evaluate(model, vq, data, cfg, device)
    return {
        "config": dataclasses.asdict(cfg),
        "metrics": {k: v for k, v in final.items() if not isinstance(v, torch.Tensor)},
        "init_metrics": {k: v for k, v in at_init.items() if not isinstance(v, torch.Tensor)},
        "autoencoder_mse_at_vq_init": continuous["mse"],
        "init": {k: at_init[k] for k in ("embeddings", "labels", "tokens", "counts")},
        "final": {k: final[k] for k in ("embeddings", "labels", "tokens", "counts", "reconstructions") if k in final},
        "curves": curves,
        "seconds": time.perf_counter() - started,
        "vq_step_seconds": float(torch.tensor(step_seconds).median()) if step_seconds else float("nan"),
    }
