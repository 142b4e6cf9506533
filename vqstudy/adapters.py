"""The quantizers people use instead of (or besides) the paper's fix, behind the study's
quantizer interface, so that one training loop compares them all.

The interface is the study's own :class:`~vqstudy.quantizer.VectorQuantizer`'s:
``forward(z) -> (z_q, indices, loss)`` on latents ``z`` of shape ``(..., D)``,
``num_tokens``, ``dim``, ``codebook`` (``K x D``, in latent space, for the metrics) and
``init_codebook(embeddings, iters, seed, vectors_per_batch)``. The study's own quantizer
returns its *unweighted* commitment loss (the training loop multiplies it by ``beta``);
an adapter returns the loss its library module returns, weighted as that module weights
it, to be added as it is (:func:`loss_weight`), and so does the study's quantizer when its
tokens are learned by gradient (``codebook_update="gradient"``:
:class:`~vqstudy.quantizer.GradientVectorQuantizer`, codebook loss + beta x commitment).

Each method is a module of vector-quantize-pytorch and the exact arguments it is built
with (:data:`METHODS`). They are written once, here: the book's table of arguments is
made from the same dictionaries (:func:`arguments_table`), with the library's default
next to every argument that is set. The library's defaults are not a plain VQ-VAE
(``VectorQuantize``: EMA decay 0.8, the rotation trick on whenever D > 1, commitment
weight 1, a Kaiming-uniform codebook, no K-means), so the methods built on
``VectorQuantize`` share one base set up as the study's baseline (EMA decay and
commitment weight from the training config, rotation trick off, codebook from the
study's K-means on the encoder's outputs), and each changes only the flags of its fix.
SimVQ, FSQ and LFQ are built with their library defaults: their codebooks are
implicit (a learned map of a frozen random codebook, a grid, the corners of a
hypercube), so there is nothing for K-means to initialise and ``init_codebook`` is a
no-op for them (:attr:`Method.kmeans`).

vector-quantize-pytorch is imported only when a library method is built (it takes
seconds to import), so the study's own quantizer does not pay for it.
"""

import inspect
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from vqstudy.quantizer import GradientVectorQuantizer, VectorQuantizer, kmeans

STUDY = "vq"  # the study's own quantizer: the default, and the one the claims chapters use
EVAL_CHUNK_ELEMENTS = 1 << 22  # distances per chunk when evaluating (the library computes all N x K at once)


@dataclass(frozen=True)
class Setting:
    """An argument whose value comes from the run: K, D, the training config's ``decay``,
    ``beta`` or ``dead_code_threshold``, or a rule of K and D (``rule``); ``text`` says
    which, in the book."""
    text: str
    rule: object = None  # (K, D) -> value; None: the named setting itself

    def __repr__(self):
        return self.text


K = Setting("K")
D = Setting("D")
DECAY = Setting("decay")
BETA = Setting("beta")
DEAD_CODE_THRESHOLD = Setting("dead_code_threshold")
DEAD_CODE_DEFAULT = 2.0  # the dead_code method's threshold unless the run says otherwise (the fixes chapter's)


def fsq_levels(num_tokens: int) -> list[int]:
    """FSQ's levels for a codebook of ``num_tokens`` (a power of two, at least 4): as few
    levels as hold the bits with at most 3 bits (8 levels) each, the bits spread as
    evenly as they go, larger levels first; the product is exactly ``num_tokens``
    (512 -> [8, 8, 8], 8192 -> [8, 8, 8, 4, 4]). FSQ refuses levels of 2 unless told
    otherwise, hence the minimum of 4."""
    problem = codebook_size_problem("fsq", num_tokens)
    if problem:
        raise ValueError(f"codebook_size={num_tokens!r} is invalid for fsq: must be {problem}")
    bits = int(math.log2(num_tokens))
    n = math.ceil(bits / 3)
    if bits // n < 2:  # e.g. 4 bits over 2 levels is [4, 4], never a level of 2
        n = bits // 2
    per_level = [bits // n + (1 if i < bits % n else 0) for i in range(n)]
    return [2 ** b for b in per_level]


def low_dimension(num_tokens: int, dim: int) -> int:
    """``codebook_dim`` of the low-dimensional codes: a quarter of D, at least 1."""
    return max(1, dim // 4)


LEVELS = Setting("levels for K (fsq_levels)", lambda k, d: fsq_levels(k))
LOW_DIM = Setting("max(1, D // 4)", low_dimension)


@dataclass(frozen=True)
class Method:
    what: str                 # the fix in one line, for the book
    library_class: str        # the class in vector_quantize_pytorch; "" for the study's own
    arguments: dict = field(default_factory=dict)  # the constructor's exact arguments
    kmeans: bool = False      # whether init_codebook runs the study's K-means on the encoder's outputs


# The baseline, as the library: VectorQuantize set up as the study's own quantizer.
AS_STUDY = {"dim": D, "codebook_size": K, "decay": DECAY, "commitment_weight": BETA, "rotation_trick": False,
            "kmeans_init": False, "threshold_ema_dead_code": 0, "use_cosine_sim": False}

METHODS = {
    STUDY: Method("the study's own VectorQuantizer: K-means init, EMA codebook (decay), commitment weight beta, "
                  "straight-through gradient", "", {}, kmeans=True),
    "lib_vq": Method("vector-quantize-pytorch's VectorQuantize set up as the study's quantizer "
                     "(the independent implementation check)", "VectorQuantize", dict(AS_STUDY), kmeans=True),
    "dead_code": Method("dead-code reset: a token whose EMA count falls below the threshold "
                        "(dead_code_threshold, uses a batch) is replaced by a random encoder output of the batch",
                        "VectorQuantize", {**AS_STUDY, "threshold_ema_dead_code": DEAD_CODE_THRESHOLD}, kmeans=True),
    "low_dim": Method("low-dimensional codes: nearest-token search in a learned linear projection of the latent "
                      "(ViT-VQGAN's factorised codes)", "VectorQuantize", {**AS_STUDY, "codebook_dim": LOW_DIM},
                      kmeans=True),
    "cosine": Method("cosine codes: latents and tokens l2-normalised, search by cosine similarity",
                     "VectorQuantize", {**AS_STUDY, "use_cosine_sim": True}, kmeans=True),
    "rotation": Method("the rotation trick: the gradient reaches the encoder through a rotation and rescaling "
                       "of the token instead of the straight-through copy", "VectorQuantize",
                       {**AS_STUDY, "rotation_trick": True}, kmeans=True),
    # SimVQ, FSQ and LFQ: the library's defaults, the ones that shape training written out
    "simvq": Method("SimVQ: a frozen random codebook through one learned linear map, codebook and commitment "
                    "losses", "SimVQ", {"dim": D, "codebook_size": K, "rotation_trick": True,
                                        "input_to_quantize_commit_loss_weight": 0.25, "commitment_weight": 1.0}),
    "fsq": Method("FSQ: each of a few projected dimensions bounded and rounded to a fixed number of levels; "
                  "no codebook, no loss", "FSQ", {"levels": LEVELS, "dim": D, "preserve_symmetry": False,
                                                 "noise_dropout": 0.0}),
    "lfq": Method("LFQ: the sign of each of log2 K projected dimensions; an entropy loss spreads the use",
                  "LFQ", {"dim": D, "codebook_size": K, "entropy_loss_weight": 0.1, "commitment_loss_weight": 0.0,
                          "diversity_gamma": 1.0, "frac_per_sample_entropy": 1.0}),
}
QUANTIZERS = tuple(METHODS)


def codebook_size_problem(quantizer: str, num_tokens: int) -> str:
    """What ``num_tokens`` must be for ``quantizer`` ("" when it is fine): FSQ's levels
    and LFQ's bits need a power of two (FSQ at least 4)."""
    power_of_two = isinstance(num_tokens, int) and num_tokens > 0 and num_tokens & (num_tokens - 1) == 0
    if quantizer == "fsq" and not (power_of_two and num_tokens >= 4):
        return "a power of two, at least 4 (FSQ's levels multiply to K exactly)"
    if quantizer == "lfq" and not (power_of_two and num_tokens >= 2):
        return "a power of two, at least 2 (LFQ has log2 K binary dimensions)"
    return ""


def check_name(quantizer) -> None:
    if quantizer not in METHODS:
        raise ValueError(f"quantizer={quantizer!r} is invalid: must be one of {list(QUANTIZERS)}")


def constructor_arguments(quantizer: str, num_tokens: int, dim: int, decay: float = 0.99,
                          beta: float = 0.25, dead_code_threshold: float = DEAD_CODE_DEFAULT) -> dict:
    """The exact keyword arguments ``quantizer``'s library class is built with for K =
    ``num_tokens`` and D = ``dim`` (every :class:`Setting` resolved)."""
    check_name(quantizer)
    values = {"K": num_tokens, "D": dim, "decay": decay, "beta": beta, "dead_code_threshold": dead_code_threshold}
    out = {}
    for name, value in METHODS[quantizer].arguments.items():
        if isinstance(value, Setting):
            value = value.rule(num_tokens, dim) if value.rule else values[value.text]
        out[name] = value
    return out


CODEBOOK_UPDATES = ("ema", "gradient")


def check_codebook_update(quantizer: str, codebook_update: str) -> None:
    if codebook_update not in CODEBOOK_UPDATES:
        raise ValueError(f"codebook_update={codebook_update!r} is invalid: must be one of {list(CODEBOOK_UPDATES)}")
    if codebook_update != "ema" and quantizer != STUDY:
        raise ValueError(f"codebook_update={codebook_update!r} is invalid: must be 'ema' for quantizer={quantizer!r} "
                         f"(the gradient update is the study's own quantizer's, {STUDY!r})")


def loss_weight(quantizer: str, beta: float, codebook_update: str = "ema") -> float:
    """What the training loop multiplies the quantizer's loss by: ``beta`` for the study's
    own with its EMA codebook (it returns the unweighted commitment), 1 for an adapter
    (its module weights its own losses, as the library intends) and for the study's own
    with ``codebook_update="gradient"`` (it returns codebook loss + beta x commitment)."""
    check_name(quantizer)
    check_codebook_update(quantizer, codebook_update)
    return beta if quantizer == STUDY and codebook_update == "ema" else 1.0


def build(quantizer: str, num_tokens: int, dim: int, decay: float = 0.99, beta: float = 0.25,
          dead_code_threshold: float = DEAD_CODE_DEFAULT, codebook_update: str = "ema") -> nn.Module:
    """The quantizer named ``quantizer`` for K = ``num_tokens`` tokens of dimension ``dim``;
    ``dead_code_threshold`` reaches the dead_code method, ``codebook_update`` the study's own."""
    check_name(quantizer)
    check_codebook_update(quantizer, codebook_update)
    if quantizer == STUDY:
        if codebook_update == "gradient":
            return GradientVectorQuantizer(num_tokens, dim, beta)
        return VectorQuantizer(num_tokens, dim, decay)
    problem = codebook_size_problem(quantizer, num_tokens)
    if problem:
        raise ValueError(f"codebook_size={num_tokens!r} is invalid for quantizer={quantizer!r}: must be {problem}")
    import vector_quantize_pytorch as library

    method = METHODS[quantizer]
    arguments = constructor_arguments(quantizer, num_tokens, dim, decay, beta, dead_code_threshold)
    module = getattr(library, method.library_class)(**arguments)
    return LibraryQuantizer(quantizer, module, num_tokens, dim)


class LibraryQuantizer(nn.Module):
    """A vector-quantize-pytorch module behind the study's quantizer interface.

    Latents of any shape ``(..., D)`` go to the module as one sequence ``(1, N, D)`` (the
    layout every one of these modules takes, channels last) and come back in their
    shape; indices come back as ``long``; a module that returns no loss (FSQ) adds 0.
    """

    def __init__(self, name: str, module: nn.Module, num_tokens: int, dim: int):
        super().__init__()
        self.name, self.module, self.num_tokens, self.dim = name, module, num_tokens, dim
        self.library_class = METHODS[name].library_class

    def forward(self, z: torch.Tensor):
        flat = z.reshape(1, -1, self.dim)
        if self.training:  # one call: the batch's EMA update, dead-code reset and losses are the module's own
            z_q, indices, loss = self.call(flat)
        else:  # evaluation changes nothing: rows in chunks, so that no N x K distance matrix exists at once
            rows = max(1, EVAL_CHUNK_ELEMENTS // self.num_tokens)
            parts = [self.call(flat[:, i:i + rows]) for i in range(0, flat.shape[1], rows)]
            z_q, indices = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
            loss = sum(p[2] * p[0].shape[1] for p in parts) / flat.shape[1]
        return z_q.reshape(z.shape), indices.reshape(z.shape[:-1]).long(), loss

    def call(self, flat: torch.Tensor):
        """The module on ``(1, N, D)``: ``(z_q, indices, loss)``, 0 for a module without a loss."""
        out = self.module(flat)
        return out[0], out[1], out[2] if len(out) > 2 else flat.new_zeros(())

    @property
    @torch.no_grad()
    def codebook(self) -> torch.Tensor:
        """The ``K x D`` tokens in latent space: what the decoder receives for each index
        (FSQ and LFQ: their implicit grid of codes; a projected codebook: projected out)."""
        m = self.module
        if self.library_class == "VectorQuantize":
            codes = m.codebook
        elif self.library_class == "SimVQ":
            return m.codebook.detach()
        elif self.library_class == "FSQ":
            codes = m.implicit_codebook
        else:  # LFQ
            codes = m.codebook
        return m.project_out(codes).detach()

    @torch.no_grad()
    def init_codebook(self, embeddings: torch.Tensor, iters: int = 20, seed: int = 0,
                      vectors_per_batch: int | None = None) -> None:
        """The study's K-means (k-means++ seeding, ``iters`` Lloyd iterations) on
        ``embeddings`` as the module sees them (projected in; l2-normalised for cosine
        codes, the centres too), for the methods built on ``VectorQuantize``; the EMA
        counts start at the cluster sizes rescaled to one batch (as the study's own
        quantizer, and as the library's own K-means init on a first batch). A no-op for
        SimVQ, FSQ and LFQ (module docstring)."""
        if not METHODS[self.name].kmeans:
            return
        book = self.module._codebook
        x = book.transform_input(self.module.project_in(embeddings.reshape(-1, self.dim)))
        centres, counts = kmeans(x, self.num_tokens, iters=iters, seed=seed)
        if self.module.use_cosine_sim:
            centres = torch.nn.functional.normalize(centres, dim=-1)
        if vectors_per_batch is not None:
            counts = counts * (vectors_per_batch / counts.sum())
        book.embed.data[0].copy_(centres)
        book.embed_avg.data[0].copy_(centres * counts[:, None])
        book.cluster_size.data[0].copy_(counts)
        book.initted.data.fill_(True)


def library_defaults(class_name: str) -> dict:
    """The default of every constructor argument of a vector-quantize-pytorch class."""
    import vector_quantize_pytorch as library

    params = inspect.signature(getattr(library, class_name).__init__).parameters
    return {name: p.default for name, p in params.items()
            if name != "self" and p.default is not inspect.Parameter.empty}


def arguments_table(settings: dict[str, tuple[int, int]], decay: float = 0.99, beta: float = 0.25,
                    dead_code_threshold: float = DEAD_CODE_DEFAULT):
    """Every library method's exact constructor arguments, one row per method: the
    keyword arguments it is built with in each setting of ``settings`` (a name ->
    (K, D)), and each argument whose value is not the library's default (read from the
    constructor's signature), default -> value. Made from :data:`METHODS`, the
    dictionaries :func:`build` uses."""
    import pandas as pd

    values = {"decay": decay, "beta": beta, "dead_code_threshold": dead_code_threshold}
    rows = []
    for name, method in METHODS.items():
        if not method.library_class:
            continue
        defaults = library_defaults(method.library_class)
        row = {"method": name, "class": method.library_class}
        for label, (k, d) in settings.items():
            built = constructor_arguments(name, k, d, decay, beta, dead_code_threshold)
            row[label] = ", ".join(f"{a}={v!r}" for a, v in built.items())
        changed = []
        for arg, value in method.arguments.items():
            if arg not in defaults:  # required: no default to differ from
                continue
            if isinstance(value, Setting):
                shown = f"{values[value.text]!r} ({value.text})" if value.text in values else value.text
                changed.append(f"{arg}: {defaults[arg]!r} → {shown}")
            elif value != defaults[arg]:
                changed.append(f"{arg}: {defaults[arg]!r} → {value!r}")
        row["changed from the library's defaults"] = "; ".join(changed) or "none"
        rows.append(row)
    return pd.DataFrame(rows)
